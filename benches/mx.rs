//! Direct delivery (issue 16): `deploy/dev bench mx`. On loopback, no
//! database: an authoritative DNS server (tests/suite/common/dns_server.rs)
//! publishes 50 domains, each with its MX host on its own address
//! (127.0.0.10–59) where an SMTP sink (tests/suite/common/smtp_sink.rs)
//! listens on one shared port. Prints, for the same run:
//! - messages/s delivered by `MxTransport` over the 50 domains, and by one
//!   relay (`SmtpTransport`, one sink) at the same concurrency, and the ratio;
//! - the shaping and MX overhead per message: one message at a time to one
//!   domain over a reused connection, mx vs relay to the same sink.
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
use postline::delivery::{OutgoingMessage, RelayConfig, SmtpOptions, SmtpTransport, Transport};
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
    OutgoingMessage {
        tenant_id: TenantId::new(),
        email_id: uuid::Uuid::new_v4(),
        envelope_from: "bounces@sender.test".into(),
        recipients: vec![to],
        raw,
    }
}

fn options(max_connections: usize) -> SmtpOptions {
    SmtpOptions {
        max_connections,
        ..SmtpOptions::default()
    }
}

/// Sends `n` messages from `c` concurrent tasks; messages/s.
async fn rate(t: Arc<dyn Transport>, n: usize, c: usize, to: impl Fn(usize) -> String) -> f64 {
    let msgs: Arc<Vec<OutgoingMessage>> = Arc::new((0..n).map(|i| message(to(i))).collect());
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
}
