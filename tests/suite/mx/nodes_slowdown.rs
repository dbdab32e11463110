//! Issue 27: a site's 421 "slow down" seen by one of three `postline serve`
//! nodes slows the others too (`delivery::mx::slowdowns`, through the
//! `mx_slowdowns` table): the cluster-wide rate of the site halves, where
//! before only the node that saw it slowed down and the site's shared rate
//! budget still admitted the full rate.

use super::*;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::drills::Server;
use common::Api;

const WINDOW: u64 = 5;
/// 600/min scaled to the window, halved.
const HALVED_PER_WINDOW: f64 = 25.0;

async fn send(bases: &[String], key: &str, to: &[String]) {
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for (i, to) in to.iter().enumerate() {
        let (client, url, key, to) = (
            client.clone(),
            format!("{}/v1/emails", bases[i % bases.len()]),
            key.to_string(),
            to.clone(),
        );
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
async fn one_nodes_421_from_a_site_slows_every_node() {
    let mut w = World::new().await;
    let busy = w.mx_host("mx.busy.test", 2, SinkConfig::default()).await;
    w.dns.add_mx("busy.test", 10, "mx.busy.test");
    w.sinks[busy].script("first@busy.test", vec![421]);
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
        // No recovery within the test.
        ("POSTLINE__DELIVERY__MX__SLOWDOWN_SECS", "600"),
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
        .create_tenant(json!({"name": "Slow", "rate_limit":
            {"requests_per_minute": 1_000_000, "emails_per_second": 100_000}}))
        .await;
    let key = api
        .tenant_key(t["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    // One node gets the 421 (whichever claims the message).
    send(&bases[..1], &key, &["first@busy.test".to_string()]).await;
    let started = Instant::now();
    while !w.sinks[busy]
        .rejected()
        .iter()
        .any(|(r, code)| r.contains("first@busy.test") && *code == 421)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no 421 answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The other nodes read it within a second or two.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sink = &w.sinks[busy];
    let before = sink.count();
    let n = 150;
    let to: Vec<String> = (0..n).map(|i| format!("r{i}@busy.test")).collect();
    send(&bases, &key, &to).await;
    assert!(
        sink.wait_count(before + n, Duration::from_secs(120)).await,
        "{} of {n} delivered",
        sink.count() - before
    );
    let (now_i, now_s) = (Instant::now(), SystemTime::now());
    let now = now_s.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let mut per_window: BTreeMap<u64, usize> = BTreeMap::new();
    for m in sink.messages().iter().skip(before) {
        let t = now - now_i.duration_since(m.received_at).as_secs_f64();
        *per_window.entry(t as u64 / WINDOW).or_default() += 1;
    }
    let counts: Vec<usize> = per_window.values().copied().collect();
    eprintln!("after one node's 421, per {WINDOW} s window over 3 nodes: {counts:?}");
    let full = &counts[1..counts.len().saturating_sub(1)];
    assert!(full.len() >= 3, "too few full windows: {counts:?}");
    let mean = full.iter().sum::<usize>() as f64 / full.len() as f64;
    assert!(
        mean <= HALVED_PER_WINDOW * 1.1,
        "the cluster did not slow down (mean {mean} per window, halved limit {HALVED_PER_WINDOW}): {counts:?}"
    );
    assert!(
        mean >= HALVED_PER_WINDOW * 0.8,
        "slowed more than once: {counts:?}"
    );
    for s in &mut servers {
        s.terminate(Duration::from_secs(20));
    }
}
