//! Sending end to end: real HTTP, real Postgres, a real SMTP sink on a socket.

use crate::common;

use std::time::Duration;

use common::smtp_sink::{SinkConfig, SmtpSink};
use common::TestApp;
use diesel::prelude::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

async fn tenant_with_key(app: &TestApp, body: Value) -> (String, String) {
    let t = app.create_tenant(body).await;
    let id = t["id"].as_str().unwrap().to_string();
    let key = app.tenant_key(&id, &["send", "emails:read"]).await;
    (id, key)
}

/// Polls `GET /v1/emails/{id}` until `status` (or panics after WAIT).
async fn wait_status(app: &TestApp, key: &str, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = app.get(&format!("/v1/emails/{id}"), key).await;
        assert_eq!(r.status, 200, "{}", r.text);
        if r.json["status"] == status {
            return r.json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "email {id} never reached {status}: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count_emails(app: &TestApp) -> i64 {
    use postline::db::schema::emails::dsl::*;
    emails.count().get_result(&mut app.sql_conn()).unwrap()
}

/// A database URL that demands TLS and verifies the server (libpq's
/// `verify-full`, the test cluster's self-signed certificate as the CA): the
/// pool and the worker's LISTEN connection both use it, and a NOTIFY still
/// wakes the worker at once (the fallback poll is a minute here).
#[tokio::test]
async fn over_a_tls_only_database_url_the_worker_is_woken_by_notify() {
    let ca = std::env::var("POSTLINE_TEST_PG_CA").expect(
        "POSTLINE_TEST_PG_CA is not set: run the suite with `deploy/dev test` (TLS test cluster)",
    );
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={ca}",
        common::fresh_database()
    );
    let sink = SmtpSink::start().await;
    let mut settings = common::test_settings(&url);
    common::smtp_settings(&mut settings, sink.port());
    settings.worker.poll_interval_ms = 60_000;
    let mut app = TestApp::spawn_on(settings).await;
    app.start_worker();
    let (_, key) = tenant_with_key(&app, json!({"name": "Acme"})).await;
    // The LISTEN connection is up (and encrypted) before the send.
    let listening = || {
        let rows: Vec<Ssl> = diesel::sql_query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = current_database() AND a.query LIKE 'LISTEN%'",
        )
        .load(&mut app.sql_conn())
        .unwrap();
        rows
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while listening().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no LISTEN connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listening().iter().all(|r| r.ssl), "LISTEN over TLS");
    let mine: Vec<Ssl> =
        diesel::sql_query("SELECT s.ssl FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()")
            .load(&mut app.sql_conn())
            .unwrap();
    assert!(mine[0].ssl, "the URL's own connections are TLS too");

    let sent = std::time::Instant::now();
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "a@acme.example", "to": "x@example.com", "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    wait_status(&app, &key, &id, "delivered").await;
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "woken by NOTIFY, not by the 60 s poll"
    );
    assert_eq!(sink.count(), 1);
}

#[derive(diesel::QueryableByName)]
struct Ssl {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    ssl: bool,
}

#[tokio::test]
async fn delivered_with_mime_headers_attachment_and_no_bcc() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let (_, key) = tenant_with_key(
        &app,
        json!({"name": "Acme", "domain": "acme.com", "settings": {"from_name": "Acme", "reply_to": "support@acme.com"}}),
    )
    .await;
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({
                "from": "noreply@mail.acme.com",
                "to": ["alice@example.com"], "cc": "carol@example.com", "bcc": ["hidden@example.com"],
                "subject": "Your receipt", "text": "Thanks!", "html": "<p>Thanks!</p>",
                "headers": {"X-Campaign": "spring-2026"},
                "attachments": [{"filename": "receipt.txt", "content": "aGVsbG8gd29ybGQ=", "content_type": "text/plain"}],
                "tags": {"kind": "receipt"}
            }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["status"], "queued");
    let id = r.json["id"].as_str().unwrap().to_string();

    let got = sink.wait_for(1, WAIT).await;
    let m = &got[0];
    let data = String::from_utf8_lossy(&m.data);
    assert_eq!(m.mail_from, "noreply@mail.acme.com");
    let mut rcpts = m.rcpt_to.clone();
    rcpts.sort();
    assert_eq!(
        rcpts,
        vec![
            "alice@example.com",
            "carol@example.com",
            "hidden@example.com"
        ]
    );
    assert!(!data.to_ascii_lowercase().contains("bcc:"), "{data}");
    assert!(
        !data.contains("hidden@example.com"),
        "bcc recipient leaked into the message"
    );
    assert!(data.contains("X-Campaign: spring-2026"), "{data}");
    assert!(
        data.contains("From: Acme <noreply@mail.acme.com>"),
        "{data}"
    );
    assert!(data.contains("Reply-To: support@acme.com"), "{data}");
    assert!(data.contains("multipart/alternative"));
    assert!(data.contains("receipt.txt"));
    assert!(data.contains("Content-Disposition: attachment"), "{data}");
    assert!(data.contains("hello world"), "attachment body: {data}");
    // The Message-ID is on the sending (From) domain, the one DKIM signs for.
    assert!(
        data.contains("Message-ID: <") && data.contains("@mail.acme.com>"),
        "{data}"
    );
    assert!(data.contains("Date: "));

    let detail = wait_status(&app, &key, &id, "delivered").await;
    assert!(
        detail["smtp_response"].as_str().unwrap().starts_with("250"),
        "{detail}"
    );
    assert!(detail["delivered_at"].is_string());
    let kinds: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["email.queued", "email.delivered"]);
    assert!(detail.get("bcc").is_none());
}

#[tokio::test]
async fn tenant_override_uses_its_own_relay_and_credentials() {
    let default_relay = SmtpSink::start().await;
    let own_relay = SmtpSink::start_with(SinkConfig {
        require_auth: Some(("tenant-user".into(), "tenant-pass".into())),
        ..Default::default()
    })
    .await;
    let app = TestApp::spawn_serving(default_relay.port(), |_| {}).await;
    let (_, key_a) = tenant_with_key(
        &app,
        json!({"name": "A", "smtp": {"host": "127.0.0.1", "port": own_relay.port(), "tls": "none",
                "username": "tenant-user", "password": "tenant-pass"}}),
    )
    .await;
    let (_, key_b) = tenant_with_key(&app, json!({"name": "B"})).await;
    let send = |k: String, to: &'static str| {
        let app = &app;
        async move {
            let r = app
                .post(
                    "/v1/emails",
                    &k,
                    json!({"from": "x@a.example", "to": to, "subject": "s", "text": "t"}),
                )
                .await;
            assert_eq!(r.status, 202, "{}", r.text);
            r.json["id"].as_str().unwrap().to_string()
        }
    };
    let a_id = send(key_a.clone(), "to-a@example.com").await;
    let b_id = send(key_b.clone(), "to-b@example.com").await;
    let got = own_relay.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec!["to-a@example.com"]);
    assert_eq!(got[0].auth_user.as_deref(), Some("tenant-user"));
    let got = default_relay.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec!["to-b@example.com"]);
    wait_status(&app, &key_a, &a_id, "delivered").await;
    wait_status(&app, &key_b, &b_id, "delivered").await;
    assert!(default_relay
        .messages()
        .iter()
        .all(|m| !m.rcpt_to.contains(&"to-a@example.com".to_string())));
    assert_eq!(own_relay.messages().len(), 1);
}

#[tokio::test]
async fn deferred_then_delivered_and_bounced_with_reply() {
    let sink = SmtpSink::start().await;
    sink.script("later@example.com", vec![451, 250]);
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "a@a.example", "to": "later@example.com", "subject": "s", "text": "t"}),
        )
        .await;
    let later = r.json["id"].as_str().unwrap().to_string();
    let r = app
        .post("/v1/emails", &key, json!({"from": "a@a.example", "to": "bounce-me@example.com", "subject": "s", "text": "t"}))
        .await;
    let bounced = r.json["id"].as_str().unwrap().to_string();

    let d = wait_status(&app, &key, &later, "delivered").await;
    assert_eq!(d["attempts"], 2);
    let kinds: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec!["email.queued", "email.deferred", "email.delivered"]
    );
    assert!(
        d["events"][1]["detail"]["smtp_response"]
            .as_str()
            .unwrap()
            .contains("451"),
        "{d}"
    );

    let b = wait_status(&app, &key, &bounced, "bounced").await;
    assert!(b["smtp_response"].as_str().unwrap().contains("550"), "{b}");
    assert_eq!(b["attempts"], 1);
}

#[tokio::test]
async fn past_max_lifetime_fails() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |s| s.delivery.max_lifetime_secs = 0).await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let r = app
        .post("/v1/emails", &key, json!({"from": "a@a.example", "to": "defer-forever@example.com", "subject": "s", "text": "t"}))
        .await;
    let id = r.json["id"].as_str().unwrap().to_string();
    let f = wait_status(&app, &key, &id, "failed").await;
    assert!(f["last_error"].as_str().unwrap().contains("451"), "{f}");
    assert_eq!(
        f["events"].as_array().unwrap().last().unwrap()["type"],
        "email.failed"
    );
}

#[tokio::test]
async fn idempotency_replays_conflicts_and_survives_concurrent_duplicates() {
    let app = TestApp::spawn().await;
    let (tid, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let body = json!({"from": "a@a.example", "to": "x@example.com", "subject": "s", "text": "t"});
    let post = |k: &'static str, b: Value| {
        let req = app
            .client
            .post(format!("{}/v1/emails", app.address))
            .bearer_auth(&key)
            .header("Idempotency-Key", k)
            .json(&b);
        async move { TestApp::read(req.send().await.unwrap()).await }
    };
    let first = post("order-1", body.clone()).await;
    assert_eq!(first.status, 202, "{}", first.text);
    let again = post("order-1", body.clone()).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.json, first.json);
    let other = post(
        "order-1",
        json!({"from": "a@a.example", "to": "y@example.com", "subject": "s", "text": "t"}),
    )
    .await;
    assert_eq!(other.status, 409);
    assert_eq!(other.json["code"], "idempotency_key_reused");
    assert_eq!(count_emails(&app), 1);

    let dupes =
        futures_util::future::join_all((0..20).map(|_| post("burst-7", body.clone()))).await;
    let ids: std::collections::HashSet<String> = dupes
        .iter()
        .map(|r| {
            assert_eq!(r.status, 202, "{}", r.text);
            r.json["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "20 concurrent duplicates -> one message");
    assert_eq!(count_emails(&app), 2);
    // the same key is independent per tenant
    let other_key = tenant_with_key(&app, json!({"name": "B"})).await.1;
    let r = app
        .client
        .post(format!("{}/v1/emails", app.address))
        .bearer_auth(&other_key)
        .header("Idempotency-Key", "order-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(count_emails(&app), 3);
    let _ = tid;
}

#[tokio::test]
async fn batch_is_all_or_nothing() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let ok = |to: &str| json!({"from": "a@a.example", "to": to, "subject": "s", "text": "t"});
    let r = app
        .post("/v1/emails/batch", &key, json!({"emails": [ok("1@example.com"), {"from": "a@a.example", "to": "bad address", "subject": "s", "text": "t"}, ok("3@example.com")]}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["errors"][0]["field"], "emails[1].to[0]");
    assert_eq!(count_emails(&app), 0);
    let too_many: Vec<Value> = (0..101).map(|i| ok(&format!("{i}@example.com"))).collect();
    assert_eq!(
        app.post("/v1/emails/batch", &key, json!({"emails": too_many}))
            .await
            .status,
        422
    );
    assert_eq!(
        app.post("/v1/emails/batch", &key, json!({"emails": []}))
            .await
            .status,
        422
    );

    let r = app
        .post(
            "/v1/emails/batch",
            &key,
            json!({"emails": [ok("1@example.com"), ok("2@example.com"), ok("3@example.com")]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["data"].as_array().unwrap().len(), 3);
    sink.wait_for(3, WAIT).await;
    for e in r.json["data"].as_array().unwrap() {
        wait_status(&app, &key, e["id"].as_str().unwrap(), "delivered").await;
    }
}

#[tokio::test]
async fn header_injection_and_bad_input_are_refused_and_nothing_is_sent() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A", "domain": "acme.com"})).await;
    let base = json!({"from": "a@acme.com", "to": "x@example.com", "subject": "s", "text": "t"});
    let with = |patch: Value| {
        let mut b = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let vectors = vec![
        with(json!({"subject": "Hi\r\nBcc: victim@example.com"})),
        with(json!({"subject": "Hi\nBcc: victim@example.com"})),
        with(json!({"subject": "Hi\rX-Injected: 1"})),
        with(json!({"subject": "Hi\u{0000}there"})),
        with(json!({"from": "a@acme.com\r\nBcc: victim@example.com"})),
        with(json!({"from": "\"Evil\r\nBcc: v@example.com\" <a@acme.com>"})),
        with(json!({"to": "x@example.com\r\nBcc: victim@example.com"})),
        with(json!({"to": ["ok@example.com", "y@example.com\nCc: v@example.com"]})),
        with(json!({"cc": "c@example.com\r\n"})),
        with(json!({"bcc": ["b@example.com\u{0000}"]})),
        with(json!({"reply_to": "r@example.com\r\nBcc: v@example.com"})),
        with(json!({"headers": {"X-Test": "v\r\nBcc: victim@example.com"}})),
        with(json!({"headers": {"X-Test\r\nBcc": "v"}})),
        with(json!({"headers": {"Bcc": "victim@example.com"}})),
        with(json!({"headers": {"X Space": "v"}})),
        with(
            json!({"attachments": [{"filename": "a.txt\r\nX-Evil: 1", "content": "aGk=", "content_type": "text/plain"}]}),
        ),
        with(
            json!({"attachments": [{"filename": "a.txt", "content": "aGk=", "content_type": "text/plain\r\nX-Evil: 1"}]}),
        ),
        with(
            json!({"attachments": [{"filename": "a.txt", "content": "not base64!!", "content_type": "text/plain"}]}),
        ),
        with(json!({"tags": {"k": "v\r\nX: y"}})),
        with(json!({"from": "someone@evil.com"})),
        with(json!({"from": "someone@evilacme.com"})),
        with(json!({"to": (0..51).map(|i| format!("r{i}@example.com")).collect::<Vec<_>>()})),
        with(json!({"to": []})),
        with(json!({"text": null})),
        with(json!({"subject": null})),
        with(json!({"tenant_id": "someone-else"})),
        with(json!({"unknown_field": 1})),
    ];
    for (i, v) in vectors.iter().enumerate() {
        let r = app.post("/v1/emails", &key, v.clone()).await;
        assert_eq!(r.status, 422, "vector {i} {v}: {}", r.text);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/problem+json")
        );
    }
    let r = app
        .post("/v1/emails", &key, with(json!({"from": "x@evil.com"})))
        .await;
    assert_eq!(r.json["code"], "from_domain_not_allowed");
    assert_eq!(count_emails(&app), 0);
    // a valid message still goes through, and it is the only one the relay sees
    let r = app
        .post("/v1/emails", &key, with(json!({"from": "a@sub.acme.com"})))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    sink.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn an_expired_lease_is_delivered_by_another_worker() {
    let sink = SmtpSink::start().await;
    let mut app = TestApp::spawn_with(|s| common::smtp_settings(s, sink.port())).await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "a@a.example", "to": "x@example.com", "subject": "s", "text": "t"}),
        )
        .await;
    let id = r.json["id"].as_str().unwrap().to_string();
    // A worker claims it with a 2 s lease and dies without an outcome.
    let claimed = common::claim_as_worker(&mut app.sql_conn(), 10, 2.0);
    assert_eq!(claimed.messages.len(), 1);
    // `attempts` counts tries with an outcome; the lost lease is not one.
    assert_eq!(wait_status(&app, &key, &id, "sending").await["attempts"], 0);
    app.start_worker();
    let d = wait_status(&app, &key, &id, "delivered").await;
    assert_eq!(d["attempts"], 1);
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn platform_style_admin_sends_and_reads_across_tenants() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |s| s.tenants.auto_create = true).await;
    let k = app.admin_key.clone();
    app.create_tenant(
        json!({"name": "Clinic", "external_id": "clinic-001", "settings": {"from_name": "Clinic"}}),
    )
    .await;
    let msg = |t: &str| json!({"tenant_id": t, "from": "a@clinic.example", "to": "p@example.com", "subject": "s", "text": "t"});
    let r = app.post("/v1/emails", &k, msg("clinic-001")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    // auto-created tenant
    let r = app.post("/v1/emails", &k, msg("clinic-002")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let t2 = app.get("/v1/tenants/clinic-002", &k).await;
    assert_eq!(t2.status, 200);
    // admin without tenant_id -> 422; on-behalf path with body tenant_id -> 422
    let r = app
        .post(
            "/v1/emails",
            &k,
            json!({"from": "a@b.example", "to": "p@example.com", "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = app
        .post("/v1/tenants/clinic-001/emails", &k, msg("clinic-001"))
        .await;
    assert_eq!(r.status, 422);
    let r = app
        .post(
            "/v1/tenants/clinic-001/emails",
            &k,
            json!({"from": "a@b.example", "to": "p@example.com", "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 202);
    let on_behalf = r.json["id"].as_str().unwrap().to_string();
    sink.wait_for(3, WAIT).await;

    let all = app.get("/v1/emails", &k).await;
    assert_eq!(all.json["data"].as_array().unwrap().len(), 3);
    let one = app.get("/v1/emails?tenant_id=clinic-001", &k).await;
    assert_eq!(one.json["data"].as_array().unwrap().len(), 2);
    let r = app
        .get(&format!("/v1/tenants/clinic-001/emails/{on_behalf}"), &k)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["from"], "Clinic <a@b.example>");
    // the same id through the other tenant is not found
    let r = app
        .get(&format!("/v1/tenants/clinic-002/emails/{on_behalf}"), &k)
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn isolation_filters_and_tenant_deletion_cancels_queued_mail() {
    let app = TestApp::spawn().await; // no worker: mail stays queued
    let k = app.admin_key.clone();
    let (a_id, key_a) = tenant_with_key(&app, json!({"name": "A"})).await;
    let (_, key_b) = tenant_with_key(&app, json!({"name": "B"})).await;
    let mut ids = Vec::new();
    for (i, tag) in ["welcome", "receipt", "receipt"].iter().enumerate() {
        let r = app
            .post("/v1/emails", &key_a, json!({"from": "a@a.example", "to": format!("{i}@example.com"), "subject": "s", "text": "t", "tags": {"kind": tag}}))
            .await;
        ids.push(r.json["id"].as_str().unwrap().to_string());
    }
    let r = app.get("/v1/emails?tag=kind:receipt", &key_a).await;
    assert_eq!(r.json["data"].as_array().unwrap().len(), 2);
    let r = app.get("/v1/emails?status=queued&limit=2", &key_a).await;
    assert_eq!(r.json["data"].as_array().unwrap().len(), 2);
    assert!(r.json["next_cursor"].is_string());
    assert_eq!(app.get("/v1/emails?status=lost", &key_a).await.status, 422);
    // B sees nothing of A's
    assert_eq!(app.get("/v1/emails", &key_b).await.json["data"], json!([]));
    let foreign = app.get(&format!("/v1/emails/{}", ids[0]), &key_b).await;
    let missing = app
        .get(&format!("/v1/emails/{}", uuid::Uuid::new_v4()), &key_b)
        .await;
    assert_eq!(foreign.status, 404);
    assert_eq!(foreign.text, missing.text);
    assert_eq!(app.get("/v1/emails?tenant_id=x", &key_b).await.status, 422);
    // a send-only key cannot read
    let send_only = app.tenant_key(&a_id, &["send"]).await;
    assert_eq!(app.get("/v1/emails", &send_only).await.status, 403);

    assert_eq!(
        app.delete(&format!("/v1/tenants/{a_id}"), &k).await.status,
        204
    );
    use postline::db::schema::emails::dsl::*;
    let statuses: Vec<String> = emails
        .filter(tenant_id.eq(uuid::Uuid::parse_str(&a_id).unwrap()))
        .select(status)
        .load(&mut app.sql_conn())
        .unwrap();
    assert_eq!(statuses, vec!["canceled"; 3]);
}
