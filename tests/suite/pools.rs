//! Egress pools (issue 26): each tenant's mail leaves from its pool's source
//! address with the pool's EHLO name, shaping is per (pool, site), a pool
//! with a relay sends through it, and an unknown pool is refused. Real
//! sockets: loopback DNS, SMTP sinks on loopback recording the peer address
//! and the EHLO name, connections bound to 127.0.0.10 / 127.0.0.11.

use crate::common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use common::dns_server::DnsServer;
use common::smtp_sink::{SinkConfig, SmtpSink};
use common::TestApp;
use postline::config::{DeliveryMode, Secret, Settings, TlsMode};
use postline::delivery::mx::SiteRule;
use postline::delivery::pools::{PoolRelay, PoolSettings};
use postline::delivery::{OutgoingMessage, SmtpOptions, Transports};
use postline::domain::TenantId;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn pool(name: &str, source: u8) -> PoolSettings {
    PoolSettings {
        name: name.into(),
        source_addresses: vec![ip(source).to_string()],
        ehlo_name: format!("{name}.mta.test"),
        relay: None,
    }
}

/// DNS on loopback and one MX sink at 127.0.0.`last` for `domain`.
async fn world(last: u8, domain: &str, cfg: SinkConfig) -> (DnsServer, SmtpSink) {
    let dns = DnsServer::start().await;
    let sink = SmtpSink::start_at(ip(last), 0, cfg).await;
    let host = format!("mx.{domain}");
    dns.add_ip(&host, ip(last));
    dns.add_mx(domain, 10, &host);
    (dns, sink)
}

fn apply(s: &mut Settings, dns: &DnsServer, sink: &SmtpSink) {
    s.delivery.mode = DeliveryMode::Mx;
    s.dns.nameservers = vec![dns.nameserver()];
    s.delivery.mx.port = sink.port();
    s.delivery.mx.ehlo_name = "default.mta.test".into();
    s.delivery.mx.allow_private_destinations = true;
    s.delivery.mx.retry_schedule_secs = vec![1];
    s.delivery.connect_timeout_secs = 2;
    s.delivery.command_timeout_secs = 5;
    s.delivery.pools = vec![pool("pool-a", 10), pool("pool-b", 11)];
    s.worker.poll_interval_ms = 100;
}

fn options() -> SmtpOptions {
    SmtpOptions {
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        ..SmtpOptions::default()
    }
}

fn message(to: &str) -> OutgoingMessage {
    let raw = lettre::Message::builder()
        .from("App <app@sender.test>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject("pool test")
        .body("hello".to_string())
        .unwrap()
        .formatted();
    OutgoingMessage::new(
        TenantId::new(),
        uuid::Uuid::new_v4(),
        "bounces@sender.test".into(),
        vec![to.to_string()],
        raw,
    )
}

async fn send(app: &TestApp, key: &str, to: &str, stream: &str) {
    let body = json!({"from": "app@acme.example", "to": to, "subject": "s",
        "text": "t", "stream": stream});
    let r = app.post("/v1/emails", key, body).await;
    assert_eq!(r.status, 202, "{}", r.text);
}

/// End to end through the API, the queue and the worker: tenant A's mail
/// leaves from pool-a (127.0.0.10, `pool-a.mta.test`), tenant B's
/// transactional mail from pool-b, B's broadcast mail from pool-a, and an
/// unassigned tenant's from `default` (no binding, `delivery.mx.ehlo_name`).
#[tokio::test]
async fn each_tenant_leaves_from_its_pools_address_with_its_ehlo() {
    let (dns, sink) = world(20, "pools-dest.test", SinkConfig::default()).await;
    let mut app = TestApp::spawn_with(|s| apply(s, &dns, &sink)).await;
    let admin = app.admin_key.clone();
    let mut keys = Vec::new();
    for name in ["A", "B", "C"] {
        let t = app.create_tenant(json!({"name": name})).await;
        assert_eq!(
            t["pools"],
            json!({"transactional": "default", "broadcast": "default"})
        );
        let id = t["id"].as_str().unwrap().to_string();
        let key = app.tenant_key(&id, &["send", "emails:read"]).await;
        keys.push((id, key));
    }
    let path = |i: usize| format!("/v1/tenants/{}", keys[i].0);
    let r = app
        .patch(
            &path(0),
            &admin,
            json!({"pools": {"transactional": "pool-a"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["pools"],
        json!({"transactional": "pool-a", "broadcast": "default"})
    );
    let both = json!({"pools": {"transactional": "pool-b", "broadcast": "pool-a"}});
    let r = app.patch(&path(1), &admin, both).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // An unknown pool: 422 unknown_pool, nothing changed.
    let r = app
        .patch(&path(1), &admin, json!({"pools": {"broadcast": "nope"}}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["code"], "unknown_pool", "{}", r.text);
    let r = app.get(&path(1), &admin).await;
    assert_eq!(
        r.json["pools"],
        json!({"transactional": "pool-b", "broadcast": "pool-a"})
    );
    // A tenant key cannot assign pools.
    let r = app
        .patch(
            &path(1),
            &keys[1].1,
            json!({"pools": {"broadcast": "pool-b"}}),
        )
        .await;
    assert!(r.status == 403 || r.status == 404, "{}", r.text);

    app.start_worker();
    send(&app, &keys[0].1, "a-tx@pools-dest.test", "transactional").await;
    send(&app, &keys[1].1, "b-tx@pools-dest.test", "transactional").await;
    send(&app, &keys[1].1, "b-bc@pools-dest.test", "broadcast").await;
    send(&app, &keys[2].1, "c-tx@pools-dest.test", "transactional").await;
    let got = sink.wait_for(4, WAIT).await;
    let leaving = |rcpt: &str| -> (IpAddr, String) {
        let m = got
            .iter()
            .find(|m| m.rcpt_to.iter().any(|r| r == rcpt))
            .unwrap_or_else(|| panic!("no message to {rcpt}"));
        (m.peer.expect("peer recorded").ip(), m.helo.clone())
    };
    assert_eq!(
        leaving("a-tx@pools-dest.test"),
        (ip(10), "pool-a.mta.test".into())
    );
    assert_eq!(
        leaving("b-tx@pools-dest.test"),
        (ip(11), "pool-b.mta.test".into())
    );
    assert_eq!(
        leaving("b-bc@pools-dest.test"),
        (ip(10), "pool-a.mta.test".into())
    );
    let (peer, helo) = leaving("c-tx@pools-dest.test");
    assert_eq!(helo, "default.mta.test");
    assert!(peer != ip(10) && peer != ip(11), "{peer}");

    let metrics = postline::metrics::render(&[]);
    assert!(
        metrics.contains("postline_pool_messages_total{outcome=\"delivered\",pool=\"pool-a\"}"),
        "per-pool metrics: {metrics}"
    );
}

/// A site limited to 2 connections: each pool gets its own 2 (a remote
/// site judges each sending address on its own), never a third.
#[tokio::test]
async fn a_site_limited_to_two_connections_sees_at_most_two_per_pool() {
    let slow = SinkConfig {
        data_delay: Duration::from_millis(30),
        ..SinkConfig::default()
    };
    let (dns, sink) = world(21, "pools-capped.test", slow).await;
    let mut s = common::test_settings("postgres://unused@127.0.0.1/unused");
    apply(&mut s, &dns, &sink);
    s.delivery.mx.sites = vec![SiteRule {
        name: "pools-capped".into(),
        mx_suffixes: vec!["pools-capped.test".into()],
        max_connections: 2,
        messages_per_connection: 3,
        messages_per_minute: 100_000,
    }];
    s.delivery.mx.max_wait_ms = 30_000;
    let t = Arc::new(Transports::with_options(&s, options()));
    let sends = (0..32).map(|i| {
        let t = t.clone();
        let pool = if i % 2 == 0 { "pool-a" } else { "pool-b" };
        let to = format!("u{i}@pools-capped.test");
        tokio::spawn(async move { t.for_message(None, pool).send(&message(&to)).await })
    });
    for out in futures_util::future::join_all(sends).await {
        let out = out.unwrap();
        assert!(out.is_delivered(), "{out:?}");
    }
    assert_eq!(sink.count(), 32);
    assert_eq!(
        sink.peak_connections_from(ip(10)),
        2,
        "pool-a: two, never three"
    );
    assert_eq!(
        sink.peak_connections_from(ip(11)),
        2,
        "pool-b: two, never three"
    );
    assert!(
        sink.peak_connections() > 2,
        "the pools' limits are their own: {}",
        sink.peak_connections()
    );
    // The site metrics are labelled by (pool, site), never by tenant.
    let metrics = postline::metrics::render(&[]);
    let value = |name: &str, pool: &str| -> f64 {
        let prefix = format!("postline_{name}{{pool=\"{pool}\",site=\"pools-capped\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix}: {metrics}"))
    };
    for pool in ["pool-a", "pool-b"] {
        let opened = value("mx_site_connections_opened_total", pool);
        assert!(opened >= 2.0, "{pool} opened {opened}");
        let open = value("mx_site_connections", pool);
        assert!((0.0..=2.0).contains(&open), "{pool} open now {open}");
        assert_eq!(value("mx_site_rate_per_minute", pool), 100_000.0);
    }
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("postline_mx_") && l.contains("tenant")),
        "{metrics}"
    );
}

/// A pool with a relay sends through it, not to the MX hosts; the others
/// still go direct.
#[tokio::test]
async fn a_pool_with_a_relay_sends_through_it() {
    let (dns, sink) = world(22, "pools-relay.test", SinkConfig::default()).await;
    let relay = SmtpSink::start().await;
    let mut s = common::test_settings("postgres://unused@127.0.0.1/unused");
    apply(&mut s, &dns, &sink);
    s.delivery.pools.push(PoolSettings {
        name: "relayed".into(),
        source_addresses: vec![],
        ehlo_name: "relayed.mta.test".into(),
        relay: Some(PoolRelay {
            host: "127.0.0.1".into(),
            port: relay.port(),
            tls: TlsMode::None,
            username: String::new(),
            password: Secret::default(),
        }),
    });
    let t = Transports::with_options(&s, options());
    let out = t
        .for_message(None, "relayed")
        .send(&message("r@pools-relay.test"))
        .await;
    assert!(out.is_delivered(), "{out:?}");
    assert_eq!(relay.count(), 1, "through the pool's relay");
    assert_eq!(sink.count(), 0, "not to the MX host");
    let out = t
        .for_message(None, "pool-b")
        .send(&message("d@pools-relay.test"))
        .await;
    assert!(out.is_delivered(), "{out:?}");
    assert_eq!(sink.count(), 1);
    assert_eq!(sink.messages()[0].peer.unwrap().ip(), ip(11));
    assert_eq!(relay.count(), 1);
}

/// The real SDKs choose the stream (Postmark's `MessageStream: "broadcast"`,
/// Resend's `X-Postline-Stream` header), and the stream chooses the pool:
/// this tenant's broadcast pool has a relay of its own, so its broadcast
/// mail arrives there and its transactional mail at the default relay.
#[tokio::test]
async fn sdk_streams_pick_the_tenants_pool() {
    if !crate::compat::node_ready() {
        return;
    }
    let default_relay = SmtpSink::start().await;
    let bulk_relay = SmtpSink::start().await;
    let bulk_port = bulk_relay.port();
    let app = TestApp::spawn_serving(default_relay.port(), |s| {
        s.delivery.pools = vec![PoolSettings {
            name: "bulk-relay".into(),
            source_addresses: vec![],
            ehlo_name: "bulk.mta.test".into(),
            relay: Some(PoolRelay {
                host: "127.0.0.1".into(),
                port: bulk_port,
                tls: TlsMode::None,
                username: String::new(),
                password: Secret::default(),
            }),
        }];
    })
    .await;
    let t = app.create_tenant(json!({"name": "Streams"})).await;
    let id = t["id"].as_str().unwrap();
    let key = app.tenant_key(id, &["send", "emails:read"]).await;
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            &app.admin_key,
            json!({"pools": {"broadcast": "bulk-relay"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let env = vec![
        ("KEY", key.clone()),
        ("FROM", crate::compat::FROM.to_string()),
        ("TO", crate::compat::TO.to_string()),
        ("POSTLINE_HOST", format!("127.0.0.1:{}", app.port)),
        ("POSTLINE_URL", app.address.clone()),
    ];
    let out = crate::compat::drive("node", "stream_sdks.mjs", &env).await;
    assert_eq!(out["pm_broadcast"]["ErrorCode"], 0, "{out}");
    assert_eq!(out["pm_outbound"]["ErrorCode"], 0, "{out}");
    let rs_id = out["rs_broadcast"]["data"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("resend id: {out}"));
    let r = app.get(&format!("/v1/emails/{rs_id}"), &key).await;
    assert_eq!(r.json["stream"], "broadcast", "{}", r.text);

    let subjects = |sink: &SmtpSink| -> Vec<String> {
        let mut v: Vec<String> = sink
            .messages()
            .iter()
            .map(|m| {
                let text = m.text();
                assert!(
                    !text.contains("X-Postline-Stream"),
                    "header sent on: {text}"
                );
                text.lines()
                    .find_map(|l| l.strip_prefix("Subject: "))
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        v.sort();
        v
    };
    bulk_relay.wait_for(2, WAIT).await;
    default_relay.wait_for(2, WAIT).await;
    assert_eq!(subjects(&bulk_relay), ["pm broadcast", "resend broadcast"]);
    assert_eq!(subjects(&default_relay), ["pm outbound", "resend default"]);
}

/// Throughput (docs/BENCHMARKS.md, issue 26): the same 160 messages to one
/// site capped at 2 connections, through one pool, then split over two
/// pools (same run, same sink answering each DATA after 20 ms). Each pool
/// has its own 2 connections, so two pools carry about twice as much.
#[tokio::test]
async fn two_pools_carry_more_than_one_at_a_capped_site() {
    let slow = SinkConfig {
        data_delay: Duration::from_millis(20),
        ..SinkConfig::default()
    };
    let (dns, sink) = world(23, "pools-bench.test", slow).await;
    let mut s = common::test_settings("postgres://unused@127.0.0.1/unused");
    apply(&mut s, &dns, &sink);
    s.delivery.mx.sites = vec![SiteRule {
        name: "pools-bench".into(),
        mx_suffixes: vec!["pools-bench.test".into()],
        max_connections: 2,
        messages_per_connection: 1000,
        messages_per_minute: 1_000_000,
    }];
    s.delivery.mx.max_wait_ms = 60_000;
    let t = Arc::new(Transports::with_options(&s, options()));
    const N: usize = 160;
    let run = |pools: &'static [&'static str]| {
        let t = t.clone();
        async move {
            let started = std::time::Instant::now();
            let sends = (0..N).map(|i| {
                let t = t.clone();
                let pool = pools[i % pools.len()];
                let to = format!("u{i}@pools-bench.test");
                tokio::spawn(async move { t.for_message(None, pool).send(&message(&to)).await })
            });
            for out in futures_util::future::join_all(sends).await {
                assert!(out.unwrap().is_delivered());
            }
            N as f64 / started.elapsed().as_secs_f64()
        }
    };
    let one = run(&["pool-a"]).await;
    let two = run(&["pool-a", "pool-b"]).await;
    println!(
        "BENCH pools: one pool {one:.0} msg/s, two pools {two:.0} msg/s ({:.2}x)",
        two / one
    );
    assert_eq!(sink.count(), 2 * N);
    assert!(two > one * 1.3, "one pool {one:.0}/s, two pools {two:.0}/s");
}
