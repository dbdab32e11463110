//! The worker under pressure (issue 22, findings 5, 8 and 9), on real
//! Postgres and SMTP sinks: a starved API pool does not let leases lapse (no
//! message sent twice), one tenant's large mail holds at most its share of
//! the in-flight bytes, a send that panics fails its message alone, and a
//! stalled outcome recorder stops the claims (issue 24: finished sends
//! waiting for it once piled up without bound).

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::json;

use crate::common::smtp_sink::{SinkConfig, SmtpSink};
use crate::common::{self, TestApp};
use crate::queue::{bulk_queue, mail, send, status_of, tenant_with_key, wait_status, WAIT};

#[derive(QueryableByName)]
struct LeaseRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    fence: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    held: bool,
}

/// The message's fence and whether its lease is unexpired now.
fn lease_of(app: &TestApp, id: &str) -> Option<LeaseRow> {
    diesel::sql_query(format!(
        "SELECT fence, coalesce(lease_until > now(), false) AS held \
         FROM email_queue WHERE email_id = '{id}'"
    ))
    .get_result(&mut app.sql_conn())
    .optional()
    .unwrap()
}

#[tokio::test]
async fn a_starved_api_pool_lets_no_lease_lapse_and_nothing_is_sent_twice() {
    // The relay takes 6 s per message, three leases of 2 s.
    let sink = SmtpSink::start_with(SinkConfig {
        data_delay: Duration::from_secs(6),
        ..Default::default()
    })
    .await;
    let tweak = |s: &mut postline::config::Settings| {
        common::smtp_settings(s, sink.port());
        s.delivery.lease_secs = 2;
        s.delivery.command_timeout_secs = 30;
        s.database.connect_timeout_secs = 1;
    };
    let mut app = TestApp::spawn_with(tweak).await;
    // A second worker on the same database takes over any lease that lapses.
    let mut other = common::test_settings(&app.db_url);
    tweak(&mut other);
    let mut node2 = TestApp::spawn_on(other).await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let id = send(&app, &key, "a@a.example", "sign-in code").await;
    app.start_worker();
    let deadline = Instant::now() + WAIT;
    while sink.connections() == 0 {
        assert!(Instant::now() < deadline, "the worker never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let claimed = lease_of(&app, &id).expect("queued").fence;
    node2.start_worker();
    // Every connection of the first node's main pool is taken, as by a flood
    // of slow API requests, while its send is on the wire.
    let pool = app.state.pool.clone();
    let size = app.state.settings.database.pool_size;
    let held = tokio::task::spawn_blocking(move || {
        (0..size)
            .map(|_| pool.get().expect("a pooled connection"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let r = app.get(&format!("/v1/emails/{id}"), &key).await;
    assert_eq!(r.status, 503, "the API pool is not starved: {}", r.text);
    // Two leases later the first node still holds it, renewed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let lease = lease_of(&app, &id).expect("still queued");
    assert!(
        lease.held,
        "the lease lapsed while the API pool was starved"
    );
    assert_eq!(lease.fence, claimed, "another worker took the message over");
    wait_status(&node2, &key, &id, "delivered").await;
    drop(held);
    // Longer than a takeover and a second 6 s send would take.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(sink.count(), 1, "the message was sent twice");
    assert!(lease_of(&app, &id).is_none(), "a lease was left behind");
}

#[tokio::test]
async fn one_tenants_large_mail_holds_only_its_byte_share_while_others_large_and_small_go() {
    const MIB: usize = 1024 * 1024;
    // Tenant A's relay stalls 20 s after each message.
    let stalled = SmtpSink::start_with(SinkConfig {
        data_delay: Duration::from_secs(20),
        ..Default::default()
    })
    .await;
    let fast = SmtpSink::start().await;
    let mut app = TestApp::spawn_with(|s| {
        common::smtp_settings(s, fast.port());
        s.delivery.command_timeout_secs = 30;
        // Scaled down from 256 MiB; a tenant's share is half of it.
        s.worker.max_inflight_bytes = 4 * MIB as u64;
    })
    .await;
    let (_, a_key) = tenant_with_key(
        &app,
        json!({"name": "A", "smtp": {"host": "127.0.0.1", "port": stalled.port(), "tls": "none"}}),
    )
    .await;
    let (_, b_key) = tenant_with_key(&app, json!({"name": "B"})).await;
    let (_, c_key) = tenant_with_key(&app, json!({"name": "C"})).await;
    let large = |subject: &str, bytes: usize| {
        let mut m = mail("x@x.example", subject);
        m["text"] = json!("x".repeat(bytes));
        m
    };
    // A's backlog is four times the whole budget.
    for i in 0..16 {
        let r = app
            .post("/v1/emails", &a_key, large(&format!("A {i}"), MIB))
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    app.start_worker();
    assert!(wait_connections(&stalled, 1).await, "A's relay got nothing");
    // Let every claim A could make land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    let r = app
        .post("/v1/emails", &c_key, large("C's invoice", 3 * MIB / 2))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let c = r.json["id"].as_str().unwrap().to_string();
    let b = send(&app, &b_key, "b@b.example", "B's sign-in code").await;
    for (key, id) in [(&b_key, &b), (&c_key, &c)] {
        loop {
            let j = status_of(&app, key, id).await;
            if j["status"] == "delivered" {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(3),
                "{id} not out within 3 s behind A's large mail: {j}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        stalled.peak_connections() <= 1,
        "A held {} sends of 1 MiB: over its 2 MiB share",
        stalled.peak_connections()
    );
}

/// Waits until `sink` has had at least `n` sessions open at once.
async fn wait_connections(sink: &SmtpSink, n: usize) -> bool {
    let deadline = Instant::now() + WAIT;
    while sink.peak_connections() < n {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test]
async fn a_send_that_panics_fails_its_message_alone_and_frees_its_slot_and_lease() {
    let sink = SmtpSink::start().await;
    let mut app = TestApp::spawn_with(|s| {
        common::smtp_settings(s, sink.port());
        // One slot: a slot the panic kept would stop every later send.
        s.worker.concurrency = 1;
        s.worker.claim_batch = 1;
    })
    .await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let doomed = send(&app, &key, "a@a.example", "doomed").await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(send(&app, &key, "a@a.example", &format!("fine {i}")).await);
    }
    let target: uuid::Uuid = doomed.parse().unwrap();
    let before_send: postline::worker::BeforeSend = Arc::new(move |id| {
        assert!(
            id != target,
            "injected: the transport blew up on this message"
        );
    });
    app.worker = Some(postline::worker::spawn_with(
        app.state.settings.clone(),
        app.state.pool.clone(),
        app.state.vault.clone(),
        postline::worker::Options {
            wake: Some(app.state.ingest.committed()),
            before_send: Some(before_send),
            ..Default::default()
        },
    ));
    let j = wait_status(&app, &key, &doomed, "failed").await;
    assert_eq!(
        j["last_error"], "sending it failed unexpectedly (an internal error, logged)",
        "{j}"
    );
    assert!(j["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "email.failed"));
    for id in &ids {
        wait_status(&app, &key, id, "delivered").await;
    }
    assert_eq!(sink.count(), 4);
    assert!(lease_of(&app, &doomed).is_none(), "its lease was left held");
}

#[tokio::test]
async fn a_stalled_recorder_stops_the_claims_instead_of_piling_up_finished_sends() {
    let sink = SmtpSink::start().await;
    let mut app = TestApp::spawn_with(|s| {
        common::smtp_settings(s, sink.port());
        s.worker.concurrency = 4;
        s.worker.claim_batch = 4;
    })
    .await;
    let (tenant, _) = tenant_with_key(&app, json!({"name": "A"})).await;
    bulk_queue(&mut app.sql_conn(), &tenant, 300);
    // Every outcome's transaction bumps the tenant's reputation counters:
    // holding this lock stalls the recorder (and nothing else the sends need).
    let mut stall = app.sql_conn();
    diesel::sql_query("BEGIN").execute(&mut stall).unwrap();
    diesel::sql_query("LOCK TABLE reputation_hourly IN EXCLUSIVE MODE")
        .execute(&mut stall)
        .unwrap();
    app.start_worker();
    assert!(sink.wait_count(4, WAIT).await, "nothing was sent");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Sent while no outcome could be written: the 4 slots, the recorder's
    // queue (2 × concurrency) and the batch it is stuck writing (at most
    // that queue and one more).
    let stalled = sink.count();
    assert!(
        stalled <= 4 + 8 + 9,
        "{stalled} of 300 sent while the recorder was stalled: claims went on"
    );
    diesel::sql_query("COMMIT").execute(&mut stall).unwrap();
    assert!(
        sink.wait_count(300, WAIT).await,
        "{} of 300 delivered",
        sink.count()
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let left = diesel::sql_query("SELECT count(*) AS n FROM email_queue")
            .get_result::<Count>(&mut app.sql_conn())
            .unwrap()
            .n;
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} outcomes not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.count(), 300, "a message was sent twice");
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}
