//! Measurements with 1, 2 and 3 nodes on one Postgres (issue 27), not tests
//! (`#[ignore]`):
//!
//! ```sh
//! deploy/dev test --test suite -- nodes_measure --ignored --nocapture --test-threads 1
//! POSTLINE_TEST_SERVER_BIN=$PWD/target/release/postline deploy/dev test --test suite -- nodes_measure --ignored --nocapture --test-threads 1
//! ```
//!
//! The second form runs the nodes from a release build (build it first with
//! `cargo build --release`); docs/BENCHMARKS.md's figures come from it.

use crate::common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::smtp_sink::SmtpSink;
use crate::drills::Server;
use crate::nodes::api_nodes;
use common::Api;
use serde_json::json;

const UP: Duration = Duration::from_secs(60);

/// Ingest (single sends, 202s per second) with 1, 2 and 3 `api` nodes on
/// one Postgres, in one run. The binary is the test build (debug): compare
/// the three figures with each other, not with docs/BENCHMARKS.md's release
/// figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: --ignored --nocapture"]
async fn measure_ingest_with_one_two_and_three_api_nodes() {
    let db = common::fresh_database();
    let (servers, admin) = api_nodes(&db, &[("POSTLINE__LOG__LEVEL", "error")]).await;
    let api = Api::remote(&servers[0].base, &admin);
    let t = api.create_tenant(json!({"name": "Bench"})).await;
    let key = api.tenant_key(t["id"].as_str().unwrap(), &["send"]).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(32)
        .build()
        .unwrap();
    for round in 0..2 {
        for n in 1..=3usize {
            let bases: Vec<String> = servers[..n].iter().map(|s| s.base.clone()).collect();
            let accepted = Arc::new(AtomicI64::new(0));
            let until = Instant::now() + Duration::from_secs(8);
            let mut tasks = Vec::new();
            for c in 0..24usize {
                let (client, base, key, acc) = (
                    client.clone(),
                    bases[c % n].clone(),
                    key.clone(),
                    accepted.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut i = 0;
                    while Instant::now() < until {
                        i += 1;
                        let r = client
                            .post(format!("{base}/v1/emails"))
                            .bearer_auth(&key)
                            .json(&json!({"from": "a@a.example",
                                "to": format!("r{c}-{i}@example.com"), "subject": "s", "text": "t"}))
                            .send()
                            .await
                            .expect("send");
                        if r.status() == 202 {
                            acc.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let n_acc = accepted.load(Ordering::SeqCst);
            eprintln!(
                "ingest round {}: {n} api node(s): {:.0} accepted/s ({n_acc} in 8 s)",
                round + 1,
                n_acc as f64 / 8.0
            );
        }
    }
}

/// End to end with 1, 2 and 3 `serve` nodes: `MESSAGES` sends spread round
/// robin over the nodes running (24 connections), timed from the first send
/// until the sink has every one; nodes are added one at a time (1, 2, 3),
/// then removed (3, 2, 1), so drift shows up as a difference between the
/// two rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: --ignored --nocapture"]
async fn measure_end_to_end_with_one_two_and_three_serve_nodes() {
    const MESSAGES: usize = 6_000;
    let db = common::fresh_database();
    let sink = SmtpSink::start().await;
    let extra = [
        ("POSTLINE__LOG__LEVEL", "error"),
        ("POSTLINE__DELIVERY__LEASE_SECS", "10"),
    ];
    let mut servers: Vec<Server> = (0..3)
        .map(|_| Server::new(&db, sink.port(), &extra))
        .collect();
    let admin = servers[0].admin_key();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(32)
        .build()
        .unwrap();
    servers[0].start();
    servers[0].wait_up(&client, UP).await;
    let api = Api::remote(&servers[0].base, &admin);
    let t = api.create_tenant(json!({"name": "Bench"})).await;
    let key = api.tenant_key(t["id"].as_str().unwrap(), &["send"]).await;
    let body = "x".repeat(1024);
    for n in [1usize, 2, 3, 3, 2, 1] {
        for s in servers.iter_mut().take(n) {
            if !s.is_running() {
                s.start();
                s.wait_up(&client, UP).await;
            }
        }
        for s in servers.iter_mut().skip(n) {
            s.terminate(Duration::from_secs(30));
        }
        let bases: Vec<String> = servers[..n].iter().map(|s| s.base.clone()).collect();
        let before = sink.count();
        let started = Instant::now();
        let next = Arc::new(AtomicI64::new(0));
        let mut tasks = Vec::new();
        for c in 0..24usize {
            let (client, bases, key, next, body) = (
                client.clone(),
                bases.clone(),
                key.clone(),
                next.clone(),
                body.clone(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if i >= MESSAGES {
                        break;
                    }
                    let r = client
                        .post(format!("{}/v1/emails", bases[(c + i) % bases.len()]))
                        .bearer_auth(&key)
                        .json(&json!({"from": "a@a.example",
                            "to": format!("r{i}@example.com"), "subject": "s", "text": body}))
                        .send()
                        .await
                        .expect("send");
                    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let accepted = started.elapsed();
        assert!(
            sink.wait_count(before + MESSAGES, Duration::from_secs(600))
                .await,
            "{} of {MESSAGES} delivered",
            sink.count() - before
        );
        let delivered = started.elapsed();
        eprintln!(
            "{n} serve node(s): {MESSAGES} accepted in {:.2} s ({:.0}/s), delivered in {:.2} s ({:.0}/s end to end)",
            accepted.as_secs_f64(),
            MESSAGES as f64 / accepted.as_secs_f64(),
            delivered.as_secs_f64(),
            MESSAGES as f64 / delivered.as_secs_f64()
        );
    }
}
