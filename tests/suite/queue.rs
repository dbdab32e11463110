//! The queue (issue 10) against real Postgres and SMTP sinks on sockets:
//! fair claiming, fencing, heartbeat leases, poison isolation, the lost-lease
//! cap, suspension holding mail, and ingest beside the worker on shared usage
//! rows without a deadlock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::{json, Value};

use crate::common::smtp_sink::{SinkConfig, SmtpSink};
use crate::common::{self, TestApp};
use postline::queue::model::{self as queue_db, Lease};
use postline::queue::record::{self, Outcome, Resolution};

pub(crate) const WAIT: Duration = Duration::from_secs(30);

pub(crate) async fn tenant_with_key(app: &TestApp, body: Value) -> (String, String) {
    let t = app.create_tenant(body).await;
    let id = t["id"].as_str().unwrap().to_string();
    let key = app.tenant_key(&id, &["send", "emails:read"]).await;
    (id, key)
}

pub(crate) fn mail(from: &str, subject: &str) -> Value {
    json!({"from": from, "to": "x@example.com", "subject": subject, "text": "t"})
}

pub(crate) async fn send(app: &TestApp, key: &str, from: &str, subject: &str) -> String {
    let r = app.post("/v1/emails", key, mail(from, subject)).await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

pub(crate) async fn status_of(app: &TestApp, key: &str, id: &str) -> Value {
    let r = app.get(&format!("/v1/emails/{id}"), key).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

pub(crate) async fn wait_status(app: &TestApp, key: &str, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let j = status_of(app, key, id).await;
        if j["status"] == status {
            return j;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never {status}: {j}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` queued messages of a tenant, written straight into the tables (the
/// shape ingest writes), so a backlog of thousands costs no HTTP round trips.
pub(crate) fn bulk_queue(conn: &mut PgConnection, tenant: &str, n: usize) {
    diesel::sql_query(format!(
        "WITH g AS (SELECT gen_random_uuid() AS id, g FROM generate_series(1, {n}) g), \
         e AS (INSERT INTO emails (tenant_id, id, expires_at, message_id, from_addr, envelope_from, \
                 to_addrs, subject, text_body) \
               SELECT '{tenant}', id, now() + interval '1 day', '<' || id || '@a.example>', \
                 'a@a.example', 'a@a.example', ARRAY['x@example.com'], 'bulk ' || g, 't' FROM g) \
         INSERT INTO email_queue (tenant_id, email_id, next_attempt_at, size_bytes) \
         SELECT '{tenant}', id, now() - interval '1 minute', 100 FROM g"
    ))
    .execute(conn)
    .expect("bulk queue");
}

#[tokio::test]
async fn a_backlog_behind_a_slow_relay_does_not_delay_another_tenant() {
    let fast = SmtpSink::start().await;
    let slow = SmtpSink::start_with(SinkConfig {
        data_delay: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let mut app = TestApp::spawn_with(|s| {
        common::smtp_settings(s, fast.port());
        s.delivery.command_timeout_secs = 30;
    })
    .await;
    let (a, _) = tenant_with_key(
        &app,
        json!({"name": "A", "smtp": {"host": "127.0.0.1", "port": slow.port(), "tls": "none"}}),
    )
    .await;
    let (_, b_key) = tenant_with_key(&app, json!({"name": "B"})).await;
    bulk_queue(&mut app.sql_conn(), &a, 3000);
    app.start_worker();
    // A's backlog is being worked on (every slot A may take is busy).
    assert!(slow.wait_count(1, WAIT).await, "A's relay got nothing");
    let sent = Instant::now();
    let id = send(&app, &b_key, "b@b.example", "B's sign-in code").await;
    wait_status(&app, &b_key, &id, "delivered").await;
    let waited = sent.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "B waited {waited:?} behind A's backlog"
    );
    assert!(fast.count() >= 1);
}

#[tokio::test]
async fn an_outcome_with_a_stale_fence_is_ignored() {
    let app = TestApp::spawn().await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let id = send(&app, &key, "a@a.example", "fenced").await;
    let mut conn = app.sql_conn();
    // Worker 1 claims with a 2 s lease and hangs; its lease expires, the
    // message is reclaimed and worker 2 claims it.
    let first = common::claim_as_worker(&mut conn, 10, 2.0).messages;
    assert_eq!(first.len(), 1);
    let stale = first[0].lease;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let (reclaimed, lost) = queue_db::reclaim_expired(&mut conn, 5).unwrap();
    assert_eq!((reclaimed, lost.len()), (1, 0));
    let second = common::claim_as_worker(&mut conn, 10, 30.0).messages;
    assert_eq!(second.len(), 1);
    let fresh = second[0].lease;
    assert!(fresh.fence > stale.fence);
    let outcome = |lease: Lease, response: &str| Outcome {
        lease,
        attempt: 1,
        recipients: Vec::new(),
        resolution: Resolution::Bounced {
            response: response.into(),
        },
    };
    // Worker 1 wakes up late: its outcome changes nothing.
    let changed = record::record(&mut conn, &[outcome(stale, "550 late")])
        .unwrap()
        .changed;
    assert!(changed.is_empty(), "a stale fence changed {changed:?}");
    assert_eq!(status_of(&app, &key, &id).await["status"], "sending");
    let delivered = Outcome {
        lease: fresh,
        attempt: 1,
        recipients: Vec::new(),
        resolution: Resolution::Delivered {
            response: "250 ok".into(),
        },
    };
    assert_eq!(
        record::record(&mut conn, &[delivered])
            .unwrap()
            .changed
            .len(),
        1
    );
    let j = status_of(&app, &key, &id).await;
    assert_eq!(j["status"], "delivered");
    assert_eq!(j["smtp_response"], "250 ok");
    // And the stale worker still cannot touch it afterwards.
    assert!(record::record(&mut conn, &[outcome(stale, "550 late")])
        .unwrap()
        .changed
        .is_empty());
    assert_eq!(status_of(&app, &key, &id).await["status"], "delivered");
}

#[tokio::test]
async fn a_send_longer_than_the_lease_is_not_taken_over() {
    let sink = SmtpSink::start_with(SinkConfig {
        data_delay: Duration::from_secs(6),
        ..Default::default()
    })
    .await;
    let tweak = |s: &mut postline::config::Settings| {
        common::smtp_settings(s, sink.port());
        s.delivery.lease_secs = 2;
        s.delivery.command_timeout_secs = 30;
    };
    let mut app = TestApp::spawn_with(tweak).await;
    // A second worker on the same database would take over an expired lease.
    let mut other = common::test_settings(&app.db_url);
    tweak(&mut other);
    let mut node2 = TestApp::spawn_on(other).await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let id = send(&app, &key, "a@a.example", "slow").await;
    app.start_worker();
    node2.start_worker();
    wait_status(&app, &key, &id, "delivered").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sink.count(),
        1,
        "sent twice: a lease was taken over mid-send"
    );
}

#[tokio::test]
async fn a_poison_message_fails_alone_and_the_rest_is_delivered() {
    let sink = SmtpSink::start().await;
    let mut app = TestApp::spawn_with(|s| common::smtp_settings(s, sink.port())).await;
    let (tenant, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(send(&app, &key, "a@a.example", &format!("fine {i}")).await);
    }
    let panics = send(&app, &key, "a@a.example", "poison").await;
    let broken = send(&app, &key, "a@a.example", "broken").await;
    // A stored row that no longer builds (corrupt attachments).
    diesel::sql_query(format!(
        "UPDATE emails SET attachments = '[{{\"filename\": 7}}]' WHERE tenant_id = '{tenant}' AND id = '{broken}'"
    ))
    .execute(&mut app.sql_conn())
    .unwrap();
    let prepare: postline::worker::Prepare = Arc::new(|row: postline::emails::model::EmailRow| {
        assert!(
            row.subject != "poison",
            "preparation blew up on this message"
        );
        postline::emails::mime::build(row)
    });
    app.worker = Some(postline::worker::spawn_with(
        app.state.settings.clone(),
        app.state.pool.clone(),
        app.state.vault.clone(),
        postline::worker::Options {
            wake: Some(app.state.ingest.committed()),
            prepare,
            ..Default::default()
        },
    ));
    for id in &ids {
        wait_status(&app, &key, id, "delivered").await;
    }
    for id in [&panics, &broken] {
        let j = wait_status(&app, &key, id, "failed").await;
        let reason = j["last_error"].as_str().unwrap_or_default();
        assert!(reason.starts_with("message cannot be built"), "{j}");
        assert!(j["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "email.failed"));
    }
    assert_eq!(sink.count(), 8);
}

#[tokio::test]
async fn a_message_lost_by_workers_repeatedly_fails_instead_of_being_reclaimed_forever() {
    let sink = SmtpSink::start().await;
    let mut app = TestApp::spawn_with(|s| {
        common::smtp_settings(s, sink.port());
        s.worker.max_lost_leases = 2;
    })
    .await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let id = send(&app, &key, "a@a.example", "cursed").await;
    let mut conn = app.sql_conn();
    // Two workers in a row take it and die.
    assert_eq!(common::claim_as_worker(&mut conn, 1, 2.0).messages.len(), 1);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(queue_db::reclaim_expired(&mut conn, 2).unwrap().0, 1);
    assert_eq!(common::claim_as_worker(&mut conn, 1, 2.0).messages.len(), 1);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    // A healthy worker's maintenance finds the second loss and fails it.
    app.start_worker();
    let j = wait_status(&app, &key, &id, "failed").await;
    assert!(
        j["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("worker lost it repeatedly"),
        "{j}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn suspension_holds_mail_and_activation_delivers_it() {
    let sink = SmtpSink::start().await;
    let mut app = TestApp::spawn_with(|s| common::smtp_settings(s, sink.port())).await;
    let (tenant, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let reader = app.tenant_key(&tenant, &["emails:read"]).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(send(&app, &key, "a@a.example", &format!("m{i}")).await);
    }
    let admin = app.admin_key.clone();
    let r = app
        .patch(
            &format!("/v1/tenants/{tenant}"),
            &admin,
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.start_worker();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sink.count(), 0, "a suspended tenant's mail was delivered");
    let path = format!("/v1/tenants/{tenant}/emails/{}", ids[0]);
    assert_eq!(app.get(&path, &admin).await.json["status"], "held");
    let r = app
        .patch(
            &format!("/v1/tenants/{tenant}"),
            &admin,
            json!({"status": "active"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for id in &ids {
        wait_status(&app, &reader, id, "delivered").await;
    }
    assert_eq!(sink.count(), 10);
}

#[tokio::test]
async fn ingest_and_worker_on_overlapping_quota_tenants_never_deadlock() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let (mut keys, mut ids) = (Vec::new(), Vec::new());
    for i in 0..4 {
        let limits = if i % 2 == 0 {
            json!({"emails_per_day": 100000})
        } else {
            json!(null)
        };
        let (id, key) =
            tenant_with_key(&app, json!({"name": format!("T{i}"), "rate_limit": limits})).await;
        keys.push(key);
        ids.push(id);
    }
    let deadlocks = |conn: &mut PgConnection| -> i64 {
        #[derive(QueryableByName)]
        struct D {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            deadlocks: i64,
        }
        diesel::sql_query(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
        )
        .get_result::<D>(conn)
        .map(|d| d.deadlocks)
        .unwrap_or(0)
    };
    let before = deadlocks(&mut app.sql_conn());
    let base = app.address.clone();
    let mut tasks = Vec::new();
    for c in 0..32 {
        let client = app.client.clone();
        let base = base.clone();
        let keys = keys.clone();
        let (ids, admin) = (ids.clone(), app.admin_key.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for n in 0..15 {
                // Single sends, and admin batches spanning a quota-bound and a
                // quota-free tenant (in either order), over all tenants.
                let i = (c + n) % keys.len();
                let (key, path, body) = if n % 3 == 0 {
                    let one = |t: &str| {
                        let mut m = mail("a@a.example", "batch");
                        m["tenant_id"] = json!(t);
                        m
                    };
                    let (x, y) = (&ids[i], &ids[(i + 1) % ids.len()]);
                    (
                        &admin,
                        "/v1/emails/batch",
                        json!({"emails": [one(x), one(y)]}),
                    )
                } else {
                    (&keys[i], "/v1/emails", mail("a@a.example", "single"))
                };
                let r = client
                    .post(format!("{base}{path}"))
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                statuses.push(r.status().as_u16());
            }
            statuses
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        for s in t.await.unwrap() {
            assert!(s < 500, "a send answered {s}");
            assert!(s == 202, "unexpected {s}");
            accepted += 1;
        }
    }
    assert_eq!(accepted, 32 * 15);
    // 32 x 15 requests, a third of them batches of two.
    let expected = 32 * (10 + 5 * 2);
    assert!(
        sink.wait_count(expected, Duration::from_secs(60)).await,
        "{} of {expected}",
        sink.count()
    );
    assert_eq!(
        deadlocks(&mut app.sql_conn()),
        before,
        "Postgres saw a deadlock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_in_flight_mail_is_sent_again_within_two_leases() {
    use crate::drills::{self, Server};
    const LEASE: u64 = 3;
    let relay_time = Duration::from_millis(1500);
    let sink = SmtpSink::start_with(SinkConfig {
        data_delay: relay_time,
        ..Default::default()
    })
    .await;
    let db = common::fresh_database();
    let lease = LEASE.to_string();
    let mut server = Server::new(
        &db,
        sink.port(),
        &[
            ("POSTLINE__DELIVERY__LEASE_SECS", lease.as_str()),
            ("POSTLINE__DELIVERY__COMMAND_TIMEOUT_SECS", "20"),
        ],
    );
    let admin = server.admin_key();
    let http = reqwest::Client::new();
    server.start();
    server.wait_up(&http, WAIT).await;
    let key = drills::tenant_key(&http, &server.base, &admin).await;
    let api = common::Api::remote(&server.base, &admin);
    let mut ids = Vec::new();
    for i in 0..10 {
        let r = api
            .post(
                "/v1/emails",
                &key,
                mail("a@a.example", &format!("code {i}")),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        ids.push(r.json["id"].as_str().unwrap().to_string());
    }
    // The worker is in the middle of sending them (the relay takes 1.5 s).
    let deadline = Instant::now() + WAIT;
    while sink.connections() == 0 {
        assert!(Instant::now() < deadline, "the worker never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9();
    let killed = Instant::now();
    // A healthy worker on the same database takes over.
    let mut s = common::test_settings(&db);
    common::smtp_settings(&mut s, sink.port());
    s.delivery.lease_secs = LEASE;
    s.delivery.command_timeout_secs = 20;
    let mut node = TestApp::spawn_on(s).await;
    node.start_worker();
    for id in &ids {
        wait_status(&node, &key, id, "delivered").await;
    }
    let took = killed.elapsed();
    report!(
        "kill -9 with 10 in flight: all re-sent and recorded {:.1} s after the kill (lease {LEASE} s, relay {:.1} s per message)",
        took.as_secs_f64(),
        relay_time.as_secs_f64()
    );
    let bound = Duration::from_secs(2 * LEASE) + relay_time + Duration::from_secs(1);
    assert!(
        took <= bound,
        "took {took:?}, over 2 x lease + the relay's time"
    );
}

#[tokio::test]
async fn in_flight_content_is_bounded_by_bytes_and_a_larger_message_still_goes_alone() {
    let sink = SmtpSink::start_with(SinkConfig {
        data_delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let mut app = TestApp::spawn_with(|s| {
        common::smtp_settings(s, sink.port());
        s.worker.max_inflight_bytes = 1024 * 1024;
    })
    .await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let body = |n: usize| "x".repeat(n);
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut m = mail("a@a.example", &format!("big {i}"));
        m["text"] = json!(body(400 * 1024));
        let r = app.post("/v1/emails", &key, m).await;
        assert_eq!(r.status, 202, "{}", r.text);
        ids.push(r.json["id"].as_str().unwrap().to_string());
    }
    let mut m = mail("a@a.example", "larger than the whole budget");
    m["text"] = json!(body(1536 * 1024));
    let r = app.post("/v1/emails", &key, m).await;
    assert_eq!(r.status, 202, "{}", r.text);
    ids.push(r.json["id"].as_str().unwrap().to_string());
    app.start_worker();
    for id in &ids {
        wait_status(&app, &key, id, "delivered").await;
    }
    // 1 MiB of content in flight: two 400 KB messages at a time, so the
    // pooled transport never needed a third connection.
    assert!(
        sink.connections() <= 2,
        "{} connections: more than 1 MiB was in flight",
        sink.connections()
    );
}

#[tokio::test]
async fn mail_that_comes_back_after_its_tenant_was_suspended_is_held_too() {
    let sink = SmtpSink::start().await;
    let mut app = TestApp::spawn_with(|s| common::smtp_settings(s, sink.port())).await;
    let (tenant, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let id = send(&app, &key, "a@a.example", "straggler").await;
    // As if the message had been on the wire at the moment of suspension
    // and came back deferred: the tenant is suspended, its row not held.
    diesel::sql_query(format!(
        "UPDATE tenants SET status = 'suspended' WHERE id = '{tenant}'"
    ))
    .execute(&mut app.sql_conn())
    .unwrap();
    app.start_worker();
    let admin = app.admin_key.clone();
    let path = format!("/v1/tenants/{tenant}/emails/{id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get(&path, &admin).await.json["status"] != "held" {
        assert!(Instant::now() < deadline, "never held");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sink.count(), 0, "a suspended tenant's mail was sent");
}
