//! Received messages per second (issue 28; `docs/BENCHMARKS.md`), run on
//! demand: `deploy/dev test --test suite inbound_bench -- --ignored --nocapture`.
//! `SESSIONS` SMTP sessions send `PER_SESSION` messages of ~10 KB each, one
//! transaction after another, to (a) the real listener with a `webhook`
//! route (verdicts, parsing, storage, the signed POST to the receiver
//! counted as done) and (b) an accept-and-drop handler on the same
//! listener code and limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use postline::smtp_server::{Envelope, Handler, Reply};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::inbound::{message, route, world_with};

const SESSIONS: usize = 8;
const PER_SESSION: usize = 25;

struct Drop;

#[async_trait]
impl Handler for Drop {
    async fn rcpt(&self, _: &Envelope, _: &str) -> Reply {
        Reply::new(250, "2.1.5 OK")
    }
    async fn data(&self, _: Envelope, _: Vec<u8>) -> Reply {
        Reply::new(250, "2.0.0 dropped")
    }
}

async fn session(addr: std::net::SocketAddr, msg: Arc<Vec<u8>>, n: usize) {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> u16 {
        loop {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line[..3].parse().unwrap_or(0);
            }
        }
    }
    assert_eq!(reply(&mut r).await, 220);
    w.write_all(b"EHLO bench.test\r\n").await.unwrap();
    assert_eq!(reply(&mut r).await, 250);
    for _ in 0..n {
        w.write_all(b"MAIL FROM:<a@sender.test>\r\n").await.unwrap();
        assert_eq!(reply(&mut r).await, 250);
        w.write_all(b"RCPT TO:<in@acme.test>\r\n").await.unwrap();
        assert_eq!(reply(&mut r).await, 250);
        w.write_all(b"DATA\r\n").await.unwrap();
        assert_eq!(reply(&mut r).await, 354);
        w.write_all(&msg).await.unwrap();
        w.write_all(b".\r\n").await.unwrap();
        assert_eq!(reply(&mut r).await, 250);
    }
    w.write_all(b"QUIT\r\n").await.unwrap();
}

async fn run(addr: std::net::SocketAddr, msg: Arc<Vec<u8>>) -> Duration {
    let t = Instant::now();
    let tasks: Vec<_> = (0..SESSIONS)
        .map(|_| tokio::spawn(session(addr, msg.clone(), PER_SESSION)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn received_messages_per_second() {
    let w = world_with(|s| s.inbound.messages_per_tenant_per_minute = 1_000_000).await;
    route(
        &w,
        json!({"match": "*@acme.test", "action": "webhook", "webhook_id": w.hook}),
    )
    .await;
    let body = format!("{}\r\n", "lorem ipsum dolor sit amet ".repeat(3)).repeat(120);
    let msg = Arc::new(message(
        "a@sender.test",
        "in@acme.test",
        "bench",
        &body,
        "",
        &[],
    ));
    let total = SESSIONS * PER_SESSION;
    // Warm up (connections, caches).
    run(w.inbound.addr(), msg.clone()).await;
    w.rx.wait_until(Duration::from_secs(120), |h| h.len() >= total)
        .await;
    let t = Instant::now();
    let accepted = run(w.inbound.addr(), msg.clone()).await;
    w.rx.wait_until(Duration::from_secs(300), |h| h.len() >= 2 * total)
        .await;
    let posted = t.elapsed();
    assert_eq!(w.rx.received().len(), 2 * total);

    let mut s = (*w.app.state.settings).clone();
    s.inbound.bind = "127.0.0.1:0".into();
    let drop = postline::bounces::inbound::serve_with(&s, Arc::new(Drop))
        .await
        .unwrap();
    run(drop.addr(), msg.clone()).await;
    let dropped = run(drop.addr(), msg.clone()).await;
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    println!(
        "inbound bench: {} messages of {} bytes, {SESSIONS} sessions: \
         received (verified, parsed, stored; 250 sent) {:.1}/s; \
         received and posted to the webhook {:.1}/s; accept-and-drop {:.1}/s",
        total,
        msg.len(),
        rate(accepted),
        rate(posted),
        rate(dropped)
    );
}
