//! Issue 22, finding 11: a request body may take a small multiple of its
//! size in the server's memory, not seven or thirty times. A binary of its
//! own because it counts every heap allocation of the process (a global
//! allocator) and measures one request at a time: the heap's peak while the
//! request runs, over the heap before it.
//!
//! Before the fix: a byte-list attachment was buffered as one serde value
//! per number (about 8x), template variables as a `Value` (16x, then
//! cloned), the Postmark batch as a `Value` and a `/v1` batch as a list of
//! whole messages before its length was checked (25-35x for small items).
//!
//! Run: `deploy/dev test --test amplification`.

#[path = "suite/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use common::{Resp, TestApp};
use serde_json::{json, Value};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; the
// counters are only arithmetic on the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            // Counted as if the old block stayed until the new one is
            // filled, as a moving realloc does.
            grew(new);
            LIVE.fetch_sub(l.size(), Relaxed);
        }
        q
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The heap's peak during `f` over the heap before it, as a multiple of
/// `body` bytes.
async fn peak<F: std::future::Future<Output = Resp>>(body: usize, f: F) -> (Resp, f64) {
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let r = f.await;
    let grown = PEAK.load(Relaxed).saturating_sub(before);
    (r, grown as f64 / body as f64)
}

async fn post_raw(app: &TestApp, path: &str, key: &str, body: &'static [u8]) -> Resp {
    let resp = app
        .client
        .post(format!("{}{}", app.address, path))
        .bearer_auth(key)
        .header("x-postmark-server-token", key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        json,
    }
}

/// `n` bytes of a fixed pseudo-random sequence (every value 0-255 occurs).
fn bytes(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// A body leaked for the test's life: the client sends it without a copy,
/// and it is on the heap before any measurement starts.
fn leak(v: Value) -> &'static [u8] {
    Vec::leak(serde_json::to_vec(&v).unwrap())
}

/// The measured requests run one after another: one test.
#[tokio::test]
async fn request_bodies_take_a_small_multiple_of_their_size() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant(json!({"name": "Bodies"})).await;
    let key = app
        .tenant_key(
            t["id"].as_str().unwrap(),
            &["send", "templates:read", "templates:write"],
        )
        .await;
    let r = app
        .post(
            "/v1/templates",
            &key,
            json!({"name": "count", "subject": "s", "text": "{{ n|length }}"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // A warm-up send: connection pools, caches and lazily built state exist
    // before anything is measured.
    let warm = leak(
        json!({"from": "a@bodies.test", "to": "b@example.com", "subject": "s",
                           "text": "t"}),
    );
    assert_eq!(post_raw(&app, "/v1/emails", &key, warm).await.status, 202);

    // Resend, one message with ~2.8 MB as a list of byte values (10 MB of JSON).
    let content = bytes(2_800_000);
    let one = |c: Value| {
        json!({"from": "a@bodies.test", "to": "b@example.com", "subject": "s", "text": "t",
               "attachments": [{"filename": "f.bin", "content": c}]})
    };
    let listed = leak(one(json!(content)));
    let (r, x) = peak(listed.len(), post_raw(&app, "/emails", &key, listed)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    println!("resend byte list: {} bytes, peak {x:.2}x", listed.len());
    assert!(x < 3.5, "a byte-list body took {x:.2}x its size");

    // The same in a Resend batch.
    let batch = leak(json!([one(json!(bytes(2_000_000)))]));
    let (r, x) = peak(batch.len(), post_raw(&app, "/emails/batch", &key, batch)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    println!(
        "resend batch byte list: {} bytes, peak {x:.2}x",
        batch.len()
    );
    assert!(x < 3.5, "a byte-list batch took {x:.2}x its size");

    // Template variables: 2M small numbers (4 MB). The render process runs
    // out of its own 64 MiB parsing them; what is measured is the server.
    let vars = leak(
        json!({"from": "a@bodies.test", "to": "b@example.com", "template": "count",
                           "variables": {"n": vec![0u8; 2_000_000]}}),
    );
    let (r, x) = peak(vars.len(), post_raw(&app, "/v1/emails", &key, vars)).await;
    assert!(r.status == 202 || r.status == 422, "{}", r.text);
    println!("template variables: {} bytes, peak {x:.2}x", vars.len());
    assert!(x < 4.0, "template variables took {x:.2}x their size");

    // Long lists of tiny items are refused while reading, past their bound.
    let pm = leak(json!(vec![json!({"From": "a@bodies.test"}); 100_000]));
    let (r, x) = peak(pm.len(), post_raw(&app, "/email/batch", &key, pm)).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["ErrorCode"], 300, "{}", r.text);
    println!("postmark batch of 100000: {} bytes, peak {x:.2}x", pm.len());
    assert!(x < 2.0, "a long Postmark batch took {x:.2}x its size");

    let v1 = leak(json!({"emails": vec![json!({"from": "a@bodies.test"}); 100_000]}));
    let (r, x) = peak(v1.len(), post_raw(&app, "/v1/emails/batch", &key, v1)).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["errors"][0]["field"], "emails", "{}", r.text);
    println!("v1 batch of 100000: {} bytes, peak {x:.2}x", v1.len());
    assert!(x < 2.0, "a long /v1 batch took {x:.2}x its size");

    let attachments = vec![json!({}); 1_000_000];
    let many = leak(
        json!({"from": "a@bodies.test", "to": "b@example.com", "subject": "s",
                           "text": "t", "attachments": attachments}),
    );
    let (r, x) = peak(many.len(), post_raw(&app, "/emails", &key, many)).await;
    assert_eq!(r.status, 422, "{}", r.text);
    println!(
        "resend 1000000 attachments: {} bytes, peak {x:.2}x",
        many.len()
    );
    assert!(x < 2.0, "a long attachment list took {x:.2}x its size");
}
