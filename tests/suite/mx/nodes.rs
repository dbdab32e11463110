//! Issue 27: a site's connection limit and rate hold across three
//! `postline serve` processes in mx mode on one database (leased slot and
//! rate budgets), against sinks on loopback named by the loopback DNS
//! server. Two sites with the default limits (4 connections, 600/min, the
//! rate shared per 5 s window): a slow one (each DATA takes 400 ms, so the
//! connection limit binds) and a fast one (the rate binds).

use super::*;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::drills::Server;
use common::Api;

const WINDOW: u64 = 5;
/// 600/min scaled to the window.
const PER_WINDOW: usize = 50;

/// The Unix time (seconds, fractional) a sink accepted each message.
fn unix_times(sink: &SmtpSink) -> Vec<f64> {
    let (now_i, now_s) = (Instant::now(), SystemTime::now());
    let now = now_s.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    sink.messages()
        .iter()
        .map(|m| now - now_i.duration_since(m.received_at).as_secs_f64())
        .collect()
}

async fn send_all(bases: &[String], key: &str, domain: &str, n: usize) {
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (client, url, key) = (
            client.clone(),
            format!("{}/v1/emails", bases[i % bases.len()]),
            key.to_string(),
        );
        let to = format!("r{i}@{domain}");
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"from": "app@sender.test", "to": to, "subject": "s", "text": "t"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        }));
        if tasks.len() >= 16 {
            for t in tasks.drain(..) {
                t.await.unwrap();
            }
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_serve_nodes_hold_a_sites_connections_and_rate() {
    let mut w = World::new().await;
    let fast = w.mx_host("mx.fast.test", 2, SinkConfig::default()).await;
    w.dns.add_mx("fast.test", 10, "mx.fast.test");
    let slow_cfg = SinkConfig {
        data_delay: Duration::from_millis(400),
        ..SinkConfig::default()
    };
    let slow = w.mx_host("mx.slow.test", 61, slow_cfg).await;
    w.dns.add_mx("slow.test", 10, "mx.slow.test");
    let db = common::fresh_database();
    let (port, ns) = (w.port.to_string(), w.dns.nameserver());
    let extra = [
        ("POSTLINE__DELIVERY__MODE", "mx"),
        ("POSTLINE__DNS__NAMESERVERS", ns.as_str()),
        ("POSTLINE__DELIVERY__MX__PORT", port.as_str()),
        ("POSTLINE__DELIVERY__MX__EHLO_NAME", "mta.postline.test"),
        ("POSTLINE__DELIVERY__MX__ALLOW_PRIVATE_DESTINATIONS", "true"),
        ("POSTLINE__DELIVERY__MX__DEFAULT_MAX_CONNECTIONS", "4"),
        ("POSTLINE__DELIVERY__MX__DEFAULT_MESSAGES_PER_MINUTE", "600"),
        ("POSTLINE__DELIVERY__MX__SITE_RATE_WINDOW_SECS", "5"),
        ("POSTLINE__CLUSTER__LEASE_SECS", "3"),
        ("POSTLINE__CLUSTER__NODE_TIMEOUT_SECS", "3"),
    ];
    let mut servers: Vec<Server> = (0..3).map(|_| Server::new(&db, 1, &extra)).collect();
    let admin = servers[0].admin_key();
    let client = reqwest::Client::new();
    for s in &mut servers {
        s.start();
    }
    for s in &mut servers {
        s.wait_up(&client, Duration::from_secs(60)).await;
    }
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let api = Api::remote(&bases[0], &admin);
    let t: Value = api
        .create_tenant(json!({"name": "Sites", "rate_limit":
            {"requests_per_minute": 1_000_000, "emails_per_second": 100_000}}))
        .await;
    let key = api
        .tenant_key(t["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let (n_fast, n_slow) = (300, 60);
    let started = Instant::now();
    tokio::join!(
        send_all(&bases, &key, "fast.test", n_fast),
        send_all(&bases, &key, "slow.test", n_slow)
    );
    let (fast_sink, slow_sink) = (&w.sinks[fast], &w.sinks[slow]);
    let all_slow = slow_sink.wait_count(n_slow, Duration::from_secs(90)).await;
    let all_fast = fast_sink.wait_count(n_fast, Duration::from_secs(90)).await;
    let took = started.elapsed();
    let logs: String = servers.iter().map(|s| s.log_tail()).collect();
    assert!(
        all_slow && all_fast,
        "slow {} / {n_slow}, fast {} / {n_fast}\n{logs}",
        slow_sink.count(),
        fast_sink.count()
    );
    // Connections: never a fifth session at once, from three nodes that
    // would open four each on their own; the limit was reached.
    let peak = slow_sink.peak_connections();
    eprintln!("slow site: {n_slow} messages, peak {peak} sessions at once");
    assert!(
        peak <= 4,
        "{peak} concurrent sessions at a site limited to 4"
    );
    assert!(
        peak >= 3,
        "the connection limit was never approached ({peak})"
    );
    // Rate: messages per 5 s window (Unix-aligned, as the budgets are).
    let mut per_window: BTreeMap<u64, usize> = BTreeMap::new();
    for t in unix_times(fast_sink) {
        *per_window.entry(t as u64 / WINDOW).or_default() += 1;
    }
    let counts: Vec<usize> = per_window.values().copied().collect();
    eprintln!("fast site: {n_fast} messages in {took:?}, per {WINDOW} s window: {counts:?}");
    // The first and last windows are partial; the ones between are full.
    let full = &counts[1..counts.len().saturating_sub(1)];
    assert!(full.len() >= 3, "too few full windows: {counts:?}");
    // The budget admits per window; the sink sees a message after its
    // session, so one admitted at a window's end may land in the next.
    // Two windows together may not carry more than their limit + 10 %, and
    // the full windows' mean stays within 10 % of the limit.
    for pair in counts.windows(2) {
        assert!(
            pair[0] + pair[1] <= 2 * PER_WINDOW + PER_WINDOW / 5,
            "two windows over their limit + 10 %: {counts:?}"
        );
    }
    let mean = full.iter().sum::<usize>() as f64 / full.len() as f64;
    assert!(
        (PER_WINDOW as f64 * 0.9..=PER_WINDOW as f64 * 1.1).contains(&mean),
        "the rate was not held within 10 % of its limit: {counts:?}"
    );
    let total = counts.iter().sum::<usize>();
    assert!(
        total <= PER_WINDOW * counts.len(),
        "over the limit: {counts:?}"
    );
    for s in &mut servers {
        s.terminate(Duration::from_secs(20));
    }
}
