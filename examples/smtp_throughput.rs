//! Delivery throughput of `SmtpTransport` against the in-process test sink.
//!
//! `cargo run --release --example smtp_throughput -- [messages] [concurrency] [kib]`
//! (defaults 2000 10 10). Add `lettre-pool` as a fourth argument to time
//! lettre's own pooled `AsyncSmtpTransport` the same way, for comparison
//! (DESIGN §13 explains the gap).

#[path = "../tests/suite/common/smtp_sink.rs"]
mod smtp_sink;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use postline::config::TlsMode;
use postline::delivery::{OutgoingMessage, RelayConfig, SmtpOptions, SmtpTransport, Transport};
use postline::domain::TenantId;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn build_message(kib: usize) -> lettre::Message {
    let line = "The quick brown fox jumps over the lazy dog, again and again. 0123456789\r\n";
    let body = line.repeat(kib * 1024 / line.len() + 1);
    lettre::Message::builder()
        .from("App <app@sender.test>".parse().expect("from"))
        .to("rcpt@example.org".parse().expect("to"))
        .subject("throughput")
        .body(body)
        .expect("message")
}

#[tokio::main]
async fn main() {
    let total = arg(1, 2000);
    let concurrency = arg(2, 10).max(1);
    let kib = arg(3, 10);
    let lettre_pool = std::env::args().nth(4).as_deref() == Some("lettre-pool");

    let sink = smtp_sink::SmtpSink::start().await;
    let message = build_message(kib);
    let raw = message.formatted();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();

    if lettre_pool {
        let client = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(sink.port())
            .build();
        for _ in 0..concurrency {
            let (client, next, message) = (client.clone(), next.clone(), message.clone());
            workers.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    client.send(message.clone()).await.expect("lettre send");
                }
            }));
        }
    } else {
        let relay = RelayConfig {
            host: "127.0.0.1".into(),
            port: sink.port(),
            tls: TlsMode::None,
            username: None,
            password: None,
        };
        let options = SmtpOptions {
            max_connections: concurrency,
            ..SmtpOptions::default()
        };
        let transport = Arc::new(SmtpTransport::new(relay, options));
        let msg = Arc::new(OutgoingMessage::new(
            TenantId::new(),
            uuid::Uuid::new_v4(),
            "bounces@sender.test".into(),
            vec!["rcpt@example.org".into()],
            raw,
        ));
        for _ in 0..concurrency {
            let (transport, next, msg) = (transport.clone(), next.clone(), msg.clone());
            workers.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let outcome = transport.send(&msg).await;
                    assert!(outcome.is_delivered(), "{outcome:?}");
                }
            }));
        }
    }
    for w in workers {
        w.await.expect("worker");
    }
    let received = sink.wait_for(total, Duration::from_secs(30)).await;
    let secs = started.elapsed().as_secs_f64();
    let bytes: usize = received.iter().map(|m| m.data.len()).sum();
    println!(
        "{}: {total} messages of {} bytes, concurrency {concurrency}: {secs:.2} s, {:.0} msg/s, {:.1} MiB/s, {} connections",
        if lettre_pool { "lettre pool" } else { "postline SmtpTransport" },
        bytes / total.max(1),
        total as f64 / secs,
        bytes as f64 / secs / (1024.0 * 1024.0),
        sink.connections(),
    );
}
