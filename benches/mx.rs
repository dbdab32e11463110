//! Direct delivery (issue 16): `deploy/dev bench mx`. On loopback, no
//! database: an authoritative DNS server (tests/suite/common/dns_server.rs)
//! publishes 50 domains, each with its MX host on its own address
//! (127.0.0.10–59) where an SMTP sink (tests/suite/common/smtp_sink.rs)
//! listens on one shared port. Prints, for the same run:
//! - messages/s delivered by `MxTransport` over the 50 domains, and by one
//!   relay (`SmtpTransport`, one sink) at the same concurrency, and the ratio;
//! - the shaping and MX overhead per message: one message at a time to one
//!   domain over a reused connection, mx vs relay to the same sink;
//! - through one relay, 1 recipient vs 5 in one envelope vs 5 envelopes (a
//!   transaction per recipient, as VERP sends them), with and without
//!   PIPELINING (issue 22).
//!
//! `MX_N` messages (default 5000), `MX_C` concurrent sends (default 128,
//! `worker.concurrency`'s default). Run without `--bench` (as by
//! `cargo test --all-targets`) it does a small smoke run.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use postline::config::{DeliveryMode, Settings, TlsMode};
use postline::delivery::mx::MxTransport;
use postline::delivery::{
    Envelope, OutgoingMessage, RelayConfig, SmtpOptions, SmtpTransport, Transport,
};
use postline::domain::TenantId;

#[allow(dead_code)]
#[path = "../tests/suite/common/dns_server.rs"]
mod dns_server;
#[path = "../tests/suite/common/smtp_sink.rs"]
mod smtp_sink;

use dns_server::DnsServer;
use smtp_sink::{SinkConfig, SmtpSink};

const DOMAINS: u8 = 50;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn message(to: String) -> OutgoingMessage {
    let raw = lettre::Message::builder()
        .from("App <app@sender.test>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject("bench")
        .body("x".repeat(1000))
        .unwrap()
        .formatted();
    OutgoingMessage::new(
        TenantId::new(),
        uuid::Uuid::new_v4(),
        "bounces@sender.test".into(),
        vec![to],
        raw,
    )
}

fn options(max_connections: usize) -> SmtpOptions {
    SmtpOptions {
        max_connections,
        ..SmtpOptions::default()
    }
}

/// Sends `n` messages from `c` concurrent tasks; messages/s.
async fn rate(t: Arc<dyn Transport>, n: usize, c: usize, to: impl Fn(usize) -> String) -> f64 {
    rate_of(t, (0..n).map(|i| message(to(i))).collect(), c).await
}

/// Sends `msgs` from `c` concurrent tasks; messages/s.
async fn rate_of(t: Arc<dyn Transport>, msgs: Vec<OutgoingMessage>, c: usize) -> f64 {
    let n = msgs.len();
    let msgs = Arc::new(msgs);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let (t, msgs, next) = (t.clone(), msgs.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(m) = msgs.get(i) else { break };
                    let out = t.send(m).await;
                    assert!(out.is_delivered(), "{out:?}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn settings(dns: &DnsServer, port: u16) -> Settings {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut s = Settings::load_layers(&dir, Some("test"), false).expect("settings");
    s.delivery.mode = DeliveryMode::Mx;
    s.dns.nameservers = vec![dns.nameserver()];
    s.delivery.mx.port = port;
    // The sinks are on loopback.
    s.delivery.mx.allow_private_destinations = true;
    s.delivery.mx.default_max_connections = 10;
    s.delivery.mx.default_messages_per_connection = 1000;
    // The rate figure measures the transport, not a configured cap.
    s.delivery.mx.default_messages_per_minute = 100_000_000;
    s.delivery.mx.max_wait_ms = 60_000;
    s
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { env("MX_N", 5000) } else { 200 };
    let c = env("MX_C", 128);
    let serial = if full { 2000 } else { 50 };

    let dns = DnsServer::start().await;
    let ip = |i: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i));
    let first = SmtpSink::start_at(ip(0), 0, SinkConfig::default()).await;
    let port = first.port();
    let mut sinks = vec![first];
    for i in 1..DOMAINS {
        sinks.push(SmtpSink::start_at(ip(i), port, SinkConfig::default()).await);
    }
    for i in 0..DOMAINS {
        let host = format!("mx.d{i}.bench.test");
        dns.add_ip(&host, ip(i));
        dns.add_mx(&format!("d{i}.bench.test"), 10, &host);
    }
    dns.set_ttl(3600);
    let relay_sink = SmtpSink::start().await;
    let relay = |conns| -> Arc<dyn Transport> {
        let cfg = RelayConfig {
            host: "127.0.0.1".into(),
            port: relay_sink.port(),
            tls: TlsMode::None,
            username: None,
            password: None,
        };
        Arc::new(SmtpTransport::new(cfg, options(conns)))
    };
    let s = settings(&dns, port);
    let mx: Arc<dyn Transport> = Arc::new(MxTransport::new(&s, options(16)));

    println!("direct delivery, {n} messages of ~1.2 KB, {c} concurrent sends, loopback sinks");
    // Warm-up: DNS answers cached, connections open.
    rate(mx.clone(), 500.min(n), c, |i| {
        format!("w{i}@d{}.bench.test", i % DOMAINS as usize)
    })
    .await;
    rate(relay(c), 500.min(n), c, |i| format!("w{i}@relay.test")).await;
    let mx_rate = rate(mx.clone(), n, c, |i| {
        format!("u{i}@d{}.bench.test", i % DOMAINS as usize)
    })
    .await;
    let relay_c = rate(relay(c), n, c, |i| format!("u{i}@relay.test")).await;
    let relay_16 = rate(relay(16), n, c, |i| format!("u{i}@relay.test")).await;
    println!("mx, 50 domains (10 connections each)   {mx_rate:>9.0} msg/s");
    println!(
        "one relay, {c} connections            {relay_c:>9.0} msg/s   mx/relay {:.2}x",
        mx_rate / relay_c
    );
    println!(
        "one relay, 16 connections (default)    {relay_16:>9.0} msg/s   mx/relay {:.2}x",
        mx_rate / relay_16
    );

    // Overhead: one at a time, one domain, a reused connection either way.
    let one = |i: usize| format!("s{i}@d0.bench.test");
    let mx_serial = rate(mx.clone(), serial, 1, one).await;
    let relay_to_same = {
        let cfg = RelayConfig {
            host: ip(0).to_string(),
            port,
            tls: TlsMode::None,
            username: None,
            password: None,
        };
        Arc::new(SmtpTransport::new(cfg, options(1))) as Arc<dyn Transport>
    };
    rate(relay_to_same.clone(), 50, 1, one).await;
    let relay_serial = rate(relay_to_same, serial, 1, one).await;
    let (mx_us, relay_us) = (1e6 / mx_serial, 1e6 / relay_serial);
    println!("one at a time to one domain: mx {mx_us:.1} µs/msg, relay {relay_us:.1} µs/msg, overhead {:.1} µs/msg ({:.2}x)", mx_us - relay_us, mx_us / relay_us);

    recipients_per_message(if full { 2000 } else { 50 }, serial).await;
}

/// A message to `k` recipients: one envelope for all (one transaction, the
/// wire as before issue 22), or one per recipient with its own return path
/// and `X-Postline-ID` line (VERP: one transaction each).
fn fanout(i: usize, k: usize, per_recipient: bool) -> OutgoingMessage {
    let to: Vec<String> = (0..k).map(|j| format!("u{i}-{j}@relay.test")).collect();
    let mut m = message(to[0].clone());
    m.envelopes = if per_recipient {
        to.iter()
            .enumerate()
            .map(|(j, r)| Envelope {
                from: format!("b+{i}x{j}@bounces.bench.test"),
                recipients: vec![r.clone()],
                headers: format!("X-Postline-ID: {i}x{j}\r\n"),
                content: None,
            })
            .collect()
    } else {
        vec![Envelope {
            from: "bounces@sender.test".into(),
            recipients: to,
            headers: String::new(),
            content: None,
        }]
    };
    m
}

/// Issue 22: the cost of a transaction per recipient through one relay,
/// with and without PIPELINING: messages/s at 16 concurrent sends, and µs
/// per message one at a time over a reused connection. The shapes take
/// turns over `ROUNDS` rounds and each figure is its best round, so a busy
/// machine's drift does not favour one shape.
async fn recipients_per_message(n: usize, serial: usize) {
    const ROUNDS: usize = 5;
    const SHAPES: [(usize, bool); 3] = [(1, false), (5, false), (5, true)];
    println!(
        "relay, recipients per message: best of {ROUNDS} rounds of {} messages at 16 concurrent sends / {} one at a time",
        n / ROUNDS,
        serial / ROUNDS
    );
    for no_pipelining in [false, true] {
        let sink = SmtpSink::start_with(SinkConfig {
            no_pipelining,
            ..SinkConfig::default()
        })
        .await;
        let relay = |conns| -> Arc<dyn Transport> {
            let cfg = RelayConfig {
                host: "127.0.0.1".into(),
                port: sink.port(),
                tls: TlsMode::None,
                username: None,
                password: None,
            };
            Arc::new(SmtpTransport::new(cfg, options(conns)))
        };
        let batch = |n: usize, (k, per_recipient): (usize, bool)| {
            (0..n)
                .map(|i| fanout(i, k, per_recipient))
                .collect::<Vec<_>>()
        };
        let (many, one) = (relay(16), relay(1));
        let mut best = [(0f64, f64::MAX); SHAPES.len()];
        for _ in 0..ROUNDS {
            for (i, shape) in SHAPES.into_iter().enumerate() {
                let per_s = rate_of(many.clone(), batch(n / ROUNDS, shape), 16).await;
                let us = 1e6 / rate_of(one.clone(), batch(serial / ROUNDS, shape), 1).await;
                best[i] = (best[i].0.max(per_s), best[i].1.min(us));
            }
        }
        let label = if no_pipelining {
            "no PIPELINING"
        } else {
            "PIPELINING"
        };
        for ((k, per_recipient), (per_s, us)) in SHAPES.into_iter().zip(best) {
            let shape = if per_recipient {
                "5 envelopes"
            } else {
                "1 envelope "
            };
            println!(
                "  {label:<14} {k} rcpt, {shape}  {per_s:>8.0} msg/s  {:>8.0} rcpt/s   one at a time {us:>7.1} µs/msg",
                per_s * k as f64
            );
        }
        println!(
            "  {label:<14} each extra transaction one at a time: {:.1} µs",
            (best[2].1 - best[1].1) / 4.0
        );
    }
}
