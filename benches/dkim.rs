//! DKIM signing cost per message: `deploy/dev bench dkim`. Signs the same
//! ~1 KB multipart message (built by the worker's MIME code) with RSA-2048,
//! Ed25519 and both, on one thread, and prints µs per message next to the
//! same run's baseline: building that message's MIME without signing.

use std::time::Instant;

use chrono::Utc;
use postline::domains::keys::{self, Algorithm};
use postline::domains::signing::{sign_with, LoadedKey};
use postline::emails::mime;
use postline::emails::model::EmailRow;
use uuid::Uuid;

const N: usize = 2000;

fn row() -> EmailRow {
    let now = Utc::now();
    EmailRow {
        tenant_id: Uuid::new_v4(),
        id: Uuid::new_v4(),
        status: "sending".into(),
        attempts: 1,
        expires_at: now,
        last_error: None,
        smtp_response: None,
        message_id: format!("<{}@acme.test>", Uuid::new_v4().simple()),
        from_addr: "Acme <hello@acme.test>".into(),
        envelope_from: "hello@acme.test".into(),
        to_addrs: vec!["rcpt@example.org".into()],
        cc_addrs: vec![],
        bcc_addrs: vec![],
        reply_to: vec!["support@acme.test".into()],
        subject: "Your receipt".into(),
        text_body: Some("Thanks for your order. ".repeat(20)),
        html_body: Some(format!("<p>{}</p>", "Thanks for your order. ".repeat(20))),
        headers: serde_json::json!({}),
        attachments: serde_json::json!([]),
        tags: serde_json::json!({}),
        created_at: now,
        delivered_at: None,
        content_purged_at: None,
        scheduled_at: None,
        stream: "transactional".into(),
        unsubscribe: false,
        track: 0,
        raw_message: None,
    }
}

fn per_message(label: &str, f: impl Fn() -> usize) -> f64 {
    // Warm-up, then N timed runs.
    for _ in 0..50 {
        std::hint::black_box(f());
    }
    let start = Instant::now();
    let mut bytes = 0;
    for _ in 0..N {
        bytes += std::hint::black_box(f());
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / N as f64;
    println!("{label:<34} {us:>9.1} µs/message ({} bytes)", bytes / N);
    us
}

fn key(alg: Algorithm) -> LoadedKey {
    let pair = keys::generate(alg).expect("key generation");
    LoadedKey::new(alg, &pair.pkcs8, "acme.test", "pl20261201abcdef").expect("key loads")
}

fn main() {
    let row = row();
    let raw = mime::build(row.clone()).expect("mime builds");
    println!("dkim: {N} messages of {} bytes, one thread", raw.len());
    let base = per_message("baseline: MIME build (unsigned)", || {
        mime::build(row.clone()).map(|r| r.len()).unwrap_or(0)
    });
    let rsa = [key(Algorithm::RsaSha256)];
    let ed = [key(Algorithm::Ed25519Sha256)];
    let both = [key(Algorithm::RsaSha256), key(Algorithm::Ed25519Sha256)];
    for (label, keys) in [
        ("sign rsa-sha256 (2048)", &rsa[..]),
        ("sign ed25519-sha256", &ed[..]),
        ("sign rsa + ed25519", &both[..]),
    ] {
        let us = per_message(label, || {
            sign_with(keys, raw.clone()).map(|s| s.len()).unwrap_or(0)
        });
        println!(
            "{label:<34} ratio to baseline {:>6.2}x; MIME build + sign = {:.1} µs/message",
            us / base,
            us + base
        );
    }
}
