//! Byte-list attachments (issue 22, finding 11): the server's peak memory
//! for 16 concurrent Resend sends whose attachment `content` is a list of
//! byte values (10 MB of JSON each, ~2.8 MB of content) against the
//! baseline of the same run, 16 sends of the same content as base64. Two
//! figures each: the growth of this process's peak RSS (VmHWM, reset
//! through `/proc/self/clear_refs` before each round, freed memory handed
//! back with `malloc_trim` first) and the heap's peak over the heap before
//! (a counting allocator). The client's bodies are built before either is
//! reset, and sent without a copy. Rounds alternate between the two forms.
//!
//! Run: `deploy/dev bench byte_lists`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use actix_web::web::Bytes;
use base64::Engine;
use common::app::{settings, BenchApp};
use common::{print_figure, BenchEnv};
use serde_json::json;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call goes to the system allocator unchanged; the counters
// are arithmetic on the sizes only.
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
            grew(new);
            LIVE.fetch_sub(l.size(), Relaxed);
        }
        q
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// `n` bytes of a fixed pseudo-random sequence (every value 0-255 occurs).
fn pseudo_random(n: usize) -> Vec<u8> {
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

struct Round {
    rss_mb: f64,
    heap_mb: f64,
}

/// Posts `bodies` at once; the growth of peak RSS and of the heap.
async fn round(client: &reqwest::Client, url: &str, key: &str, bodies: &[Bytes]) -> Round {
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe { libc::malloc_trim(0) };
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let rss_before = status_kb("VmRSS");
    let heap_before = LIVE.load(Relaxed);
    PEAK.store(heap_before, Relaxed);
    let sends = bodies.iter().map(|b| {
        client
            .post(url)
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(b.clone())
            .send()
    });
    for r in futures_util::future::join_all(sends).await {
        let r = r.expect("send");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }
    Round {
        rss_mb: status_kb("VmHWM").saturating_sub(rss_before) as f64 / 1024.0,
        heap_mb: PEAK.load(Relaxed).saturating_sub(heap_before) as f64 / 1_048_576.0,
    }
}

fn main() {
    let Some(env) = BenchEnv::from_env("byte_lists") else {
        return;
    };
    env.print_header();
    let concurrent = env.param("CONCURRENT", 16, 2);
    // 2.8 MB of content is ~10 MB as a JSON list of numbers (limit 10 MiB).
    let content = pseudo_random(env.param("CONTENT_BYTES", 2_800_000, 100_000));
    let rounds = env.iters(3, 1);
    let db = env.fresh_database();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let app = BenchApp::start(settings(&db.url, None)).await;
        let tenant = app.tenants(1).await.remove(0);
        let body = |c: serde_json::Value| {
            let b = json!({"from": format!("noreply@{}", tenant.domain), "to": "a@example.com",
                           "subject": "s", "text": "t",
                           "attachments": [{"filename": "f.bin", "content": c}]});
            Bytes::from(serde_json::to_vec(&b).unwrap())
        };
        let listed = body(json!(content));
        let b64 = body(json!(
            base64::engine::general_purpose::STANDARD.encode(&content)
        ));
        print_figure(
            "bodies",
            format!(
                "{concurrent} at once; byte list {} bytes, base64 {} bytes, content {} bytes",
                listed.len(),
                b64.len(),
                content.len()
            ),
        );
        let lists = vec![listed; concurrent];
        let b64s = vec![b64; concurrent];
        let client = reqwest::Client::new();
        let url = format!("http://{}/emails", app.addr);
        // A warm-up round of each: pools, caches, the allocator's arenas.
        round(&client, &url, &tenant.key, &b64s[..1]).await;
        round(&client, &url, &tenant.key, &lists[..1]).await;
        let (mut list_rounds, mut b64_rounds) = (Vec::new(), Vec::new());
        for i in 0..rounds {
            let order: [bool; 2] = if i % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for listed in order {
                let r = if listed {
                    round(&client, &url, &tenant.key, &lists).await
                } else {
                    round(&client, &url, &tenant.key, &b64s).await
                };
                if listed {
                    list_rounds.push(r)
                } else {
                    b64_rounds.push(r)
                }
            }
        }
        let max = |rs: &[Round], f: fn(&Round) -> f64| rs.iter().map(f).fold(0.0, f64::max);
        let (l_rss, b_rss) = (
            max(&list_rounds, |r| r.rss_mb),
            max(&b64_rounds, |r| r.rss_mb),
        );
        let (l_heap, b_heap) = (
            max(&list_rounds, |r| r.heap_mb),
            max(&b64_rounds, |r| r.heap_mb),
        );
        let per = |mb: f64, body: usize| mb * 1_048_576.0 / (body * concurrent) as f64;
        print_figure(
            "byte lists: peak RSS growth",
            format!(
                "{l_rss:.0} MiB ({:.2}x the bodies)",
                per(l_rss, lists[0].len())
            ),
        );
        print_figure(
            "base64 (baseline): peak RSS growth",
            format!(
                "{b_rss:.0} MiB ({:.2}x the bodies)",
                per(b_rss, b64s[0].len())
            ),
        );
        print_figure(
            "RSS ratio (byte lists / base64)",
            format!("{:.2}x", l_rss / b_rss),
        );
        print_figure(
            "byte lists: heap peak",
            format!(
                "{l_heap:.0} MiB ({:.2}x the bodies)",
                per(l_heap, lists[0].len())
            ),
        );
        print_figure(
            "base64 (baseline): heap peak",
            format!(
                "{b_heap:.0} MiB ({:.2}x the bodies)",
                per(b_heap, b64s[0].len())
            ),
        );
        print_figure(
            "heap ratio (byte lists / base64)",
            format!("{:.2}x", l_heap / b_heap),
        );
    });
}
