//! Egress pools (issue 26): `deploy/dev bench pools`. Loopback only: an
//! authoritative DNS server (tests/suite/common/dns_server.rs) and SMTP sinks
//! (tests/suite/common/smtp_sink.rs). Prints, in the same run:
//!
//! 1. End to end through the API, the ingest queue and the worker (`mx`
//!    mode, a fresh database): `POOLS_N` messages from two tenants to one
//!    site whose rule allows `POOLS_CONNS` connections per (pool, site) and
//!    whose sink answers each DATA after `POOLS_DATA_MS`. Arm "one pool":
//!    both tenants on pool `a` (source 127.0.0.100); arm "two pools": one
//!    tenant on `a`, the other on `b` (127.0.0.101). Messages/s from the
//!    first request to the last message at the sink, best of `POOLS_ROUNDS`
//!    rounds taken in turns, and the ratio.
//! 2. The shaping cost per message: one message at a time over reused
//!    connections through `MxTransport` to 2 pools × 50 sites (100 (pool,
//!    site) shaping entries: site lookup, connection slot, rate reservation,
//!    cached MX answer), against the same messages through a relay
//!    (`SmtpTransport`, no shaping) to the same sinks; µs/msg, the
//!    difference and the ratio, best of 5 rounds in turns.
//!
//! Run without `--bench` (as by `cargo test --all-targets`) it does a small
//! smoke run (part 1 only with `POSTLINE_TEST_DATABASE_URL`).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::app::{self as bench_app, BenchApp, BenchTenant};
use common::{machine, BenchEnv, Mode};
use postline::config::{DeliveryMode, Settings, TlsMode};
use postline::delivery::mx::SiteRule;
use postline::delivery::pools::PoolSettings;
use postline::delivery::{
    OutgoingMessage, RelayConfig, SmtpOptions, SmtpTransport, Transport, Transports,
};
use postline::domain::TenantId;
use serde_json::json;

#[allow(dead_code)]
#[path = "../tests/suite/common/dns_server.rs"]
mod dns_server;

use common::sink::smtp_sink::{SinkConfig, SmtpSink};
use dns_server::DnsServer;

const SITES: u8 = 50;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn env(name: &str, full: usize, smoke: usize, mode: Mode) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if mode == Mode::Full { full } else { smoke })
}

fn pools() -> Vec<PoolSettings> {
    ["a", "b"]
        .into_iter()
        .zip([100u8, 101])
        .map(|(name, last)| PoolSettings {
            name: name.into(),
            source_addresses: vec![ip(last).to_string()],
            ehlo_name: format!("{name}.bench.test"),
            relay: None,
        })
        .collect()
}

fn mx_settings(s: &mut Settings, dns: &DnsServer, port: u16) {
    s.delivery.mode = DeliveryMode::Mx;
    s.dns.nameservers = vec![dns.nameserver()];
    s.delivery.mx.port = port;
    s.delivery.mx.allow_private_destinations = true;
    s.delivery.mx.default_max_connections = 4;
    s.delivery.mx.default_messages_per_connection = 100_000;
    s.delivery.mx.default_messages_per_minute = 100_000_000;
    s.delivery.mx.max_wait_ms = 120_000;
    s.delivery.pools = pools();
}

#[tokio::main]
async fn main() {
    let mode = if std::env::args().any(|a| a == "--bench") {
        Mode::Full
    } else {
        Mode::Smoke
    };
    println!("== pools ({mode:?}) ==");
    println!("{:<34} {}", "machine", machine());
    match BenchEnv::from_env("pools") {
        Some(env) => two_pools_versus_one(&env).await,
        None => println!("end to end: no database, skipped"),
    }
    shaping_overhead(mode).await;
}

// ---- 1. End to end: two pools versus one --------------------------------

async fn two_pools_versus_one(benv: &BenchEnv) {
    let mode = benv.mode;
    let n = env("POOLS_N", 2000, 40, mode);
    let conns = env("POOLS_CONNS", 2, 2, mode);
    let data_ms = env("POOLS_DATA_MS", 20, 5, mode) as u64;
    let rounds = env("POOLS_ROUNDS", 2, 1, mode);
    let db = benv.fresh_database();
    let dns = DnsServer::start().await;
    let sink = SmtpSink::start_at(
        ip(20),
        0,
        SinkConfig {
            data_delay: Duration::from_millis(data_ms),
            ..SinkConfig::default()
        },
    )
    .await;
    dns.add_ip("mx.site.bench.test", ip(20));
    dns.add_mx("site.bench.test", 10, "mx.site.bench.test");
    dns.set_ttl(3600);
    let mut s = bench_app::settings(&db.url, None);
    mx_settings(&mut s, &dns, sink.port());
    s.delivery.mx.sites = vec![SiteRule {
        name: "site".into(),
        mx_suffixes: vec!["site.bench.test".into()],
        max_connections: conns,
        messages_per_connection: 100_000,
        messages_per_minute: 100_000_000,
    }];
    let mut app = BenchApp::start(s).await;
    app.start_worker();
    let tenants = app.tenants(4).await;
    let assign = |t: &BenchTenant, pool: &str| {
        let (addr, admin, id) = (app.addr, app.admin_key.clone(), t.id.clone());
        let pool = pool.to_string();
        async move {
            let r = reqwest::Client::new()
                .patch(format!("http://{addr}/v1/tenants/{id}"))
                .bearer_auth(admin)
                .json(&json!({"pools": {"transactional": pool, "broadcast": pool}}))
                .send()
                .await
                .expect("assign pool");
            assert!(r.status().is_success(), "assign: {}", r.status());
        }
    };
    // One pool: tenants 0 and 1 on `a`. Two pools: 2 on `a`, 3 on `b`.
    assign(&tenants[0], "a").await;
    assign(&tenants[1], "a").await;
    assign(&tenants[2], "a").await;
    assign(&tenants[3], "b").await;
    println!(
        "end to end (API → queue → worker → mx), {n} messages from 2 tenants to one site allowing {conns} connections per (pool, site), DATA answered after {data_ms} ms; best of {rounds} rounds"
    );
    // Warm-up: MX answers cached, sessions open.
    deliver(&app, &sink, &tenants[0..2], 20).await;
    deliver(&app, &sink, &tenants[2..4], 20).await;
    let (mut one, mut two) = (0f64, 0f64);
    for _ in 0..rounds {
        one = one.max(deliver(&app, &sink, &tenants[0..2], n).await);
        two = two.max(deliver(&app, &sink, &tenants[2..4], n).await);
    }
    println!("  one pool  (both tenants on a)        {one:>8.0} msg/s   (baseline)");
    println!(
        "  two pools (one tenant on a, one on b) {two:>8.0} msg/s   two/one {:.2}x",
        two / one
    );
    println!("  load after: {}", machine());
    app.stop_worker().await;
}

/// Posts `n` messages (batches of 100, the tenants in turn) and waits for
/// all of them at the sink; messages/s over the whole.
async fn deliver(app: &BenchApp, sink: &SmtpSink, tenants: &[BenchTenant], n: usize) -> f64 {
    let client = reqwest::Client::new();
    let before = sink.count();
    let started = Instant::now();
    let mut sent = 0;
    let mut turn = 0;
    while sent < n {
        let t = &tenants[turn % tenants.len()];
        let k = 100.min(n - sent);
        let emails: Vec<_> = (0..k)
            .map(|i| {
                json!({"from": format!("news@{}", t.domain), "to": format!("u{}@site.bench.test", sent + i),
                       "subject": "bench", "text": "x".repeat(1000)})
            })
            .collect();
        let r = client
            .post(format!("http://{}/v1/emails/batch", app.addr))
            .bearer_auth(&t.key)
            .json(&json!({"emails": emails}))
            .send()
            .await
            .expect("batch");
        assert_eq!(r.status().as_u16(), 202, "batch refused");
        sent += k;
        turn += 1;
    }
    assert!(
        sink.wait_count(before + n, Duration::from_secs(600)).await,
        "only {} of {n} delivered",
        sink.count() - before
    );
    n as f64 / started.elapsed().as_secs_f64()
}

// ---- 2. Shaping overhead: 2 pools × 50 sites versus none ----------------

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

/// µs per message, one at a time; `via(i)` picks the transport of message i.
async fn serial(n: usize, via: impl Fn(usize) -> (Arc<dyn Transport>, String)) -> f64 {
    let msgs: Vec<_> = (0..n).map(|i| (via(i), i)).collect();
    let started = Instant::now();
    for ((t, to), _) in msgs {
        let out = t.send(&message(to)).await;
        assert!(out.is_delivered(), "{out:?}");
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

async fn shaping_overhead(mode: Mode) {
    let n = env("POOLS_SERIAL", 2000, 200, mode);
    let dns = DnsServer::start().await;
    let first = SmtpSink::start_at(ip(10), 0, SinkConfig::default()).await;
    let port = first.port();
    let mut sinks = vec![first];
    for i in 1..SITES {
        sinks.push(SmtpSink::start_at(ip(10 + i), port, SinkConfig::default()).await);
    }
    for i in 0..SITES {
        let host = format!("mx.d{i}.bench.test");
        dns.add_ip(&host, ip(10 + i));
        dns.add_mx(&format!("d{i}.bench.test"), 10, &host);
    }
    dns.set_ttl(3600);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut s = Settings::load_layers(&dir, Some("test"), false).expect("settings");
    mx_settings(&mut s, &dns, port);
    let options = SmtpOptions {
        max_connections: 1,
        ..SmtpOptions::default()
    };
    let mx = Transports::with_options(&s, options.clone());
    let via_pool: Vec<Arc<dyn Transport>> = ["a", "b"]
        .into_iter()
        .map(|p| mx.for_message(None, p))
        .collect();
    // The same sinks through relays: no MX lookup, no shaping.
    let relays: Vec<Arc<dyn Transport>> = (0..SITES)
        .map(|i| {
            let cfg = RelayConfig {
                host: ip(10 + i).to_string(),
                port,
                tls: TlsMode::None,
                username: None,
                password: None,
            };
            Arc::new(SmtpTransport::new(cfg, options.clone())) as Arc<dyn Transport>
        })
        .collect();
    let sites = SITES as usize;
    let to = |i: usize| format!("s{i}@d{}.bench.test", (i / 2) % sites);
    let shaped = |i: usize| (via_pool[i % 2].clone(), to(i));
    let plain = |i: usize| (relays[(i / 2) % sites].clone(), to(i));
    // Warm-up: every (pool, site) has its MX answer and an idle session.
    serial(4 * sites, shaped).await;
    serial(4 * sites, plain).await;
    const ROUNDS: usize = 5;
    let (mut with, mut without) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        with = with.min(serial(n / ROUNDS, shaped).await);
        without = without.min(serial(n / ROUNDS, plain).await);
    }
    println!(
        "shaping overhead, one message at a time over reused sessions, {} messages per round, best of {ROUNDS}",
        n / ROUNDS
    );
    println!("  relay to the same sinks (no shaping)          {without:>8.1} µs/msg   (baseline)");
    println!(
        "  mx, 2 pools × 50 sites (100 shaping entries)  {with:>8.1} µs/msg   overhead {:.1} µs/msg ({:.2}x)",
        with - without,
        with / without
    );
    println!("  load after: {}", machine());
}
