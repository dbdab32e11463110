//! Message streams (issue 26): every entry point names the stream
//! (`stream` in the API body, Postmark's `MessageStream`, Resend's
//! `X-Postline-Stream` header, which is not sent on); bad values are refused
//! clearly; and a tenant's broadcast backlog behind a slow relay does not
//! hold back its transactional mail.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::bounces::{wait_for, PERMS};
use crate::common::smtp_sink::{SinkConfig, SmtpSink};
use crate::common::TestApp;

async fn tenant(app: &TestApp) -> String {
    let t = app.create_tenant(json!({"name": "Acme"})).await;
    app.tenant_key(t["id"].as_str().unwrap(), PERMS).await
}

#[tokio::test]
async fn every_entry_point_names_the_stream_and_bad_values_are_refused() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let key = tenant(&app).await;
    let http = reqwest::Client::new();

    // API: default transactional, explicit broadcast, unknown → 422 naming the field.
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "a@acme.test", "to": "x@example.org", "subject": "s", "text": "t"}),
        )
        .await;
    let plain = r.json["id"].as_str().unwrap().to_string();
    let r = app
        .post("/v1/emails", &key, json!({"from": "a@acme.test", "to": "x@example.org", "subject": "s", "text": "t", "stream": "broadcast"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let bc = r.json["id"].as_str().unwrap().to_string();
    let r = app
        .post("/v1/emails", &key, json!({"from": "a@acme.test", "to": "x@example.org", "subject": "s", "text": "t", "stream": "bulk"}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("stream"), "{}", r.text);
    // Batch.
    let r = app
        .post("/v1/emails/batch", &key, json!({"emails": [
            {"from": "a@acme.test", "to": "y@example.org", "subject": "s", "text": "t", "stream": "broadcast"}]}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);

    // Postmark: MessageStream outbound/broadcast; unknown → 422 ErrorCode 1235.
    let pm = |body: serde_json::Value| {
        http.post(format!("{}/email", app.address))
            .header("X-Postmark-Server-Token", &key)
            .header("Accept", "application/json")
            .json(&body)
            .send()
    };
    let r = pm(json!({"From": "a@acme.test", "To": "p@example.org", "Subject": "s", "TextBody": "t", "MessageStream": "broadcast"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let pm_id = v["MessageID"].as_str().unwrap().to_string();
    let r = pm(json!({"From": "a@acme.test", "To": "p@example.org", "Subject": "s", "TextBody": "t", "MessageStream": "marketing"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["ErrorCode"], 1235, "{v}");

    // Resend: the header names the stream and is not sent on.
    let rs =
        |h: &str| {
            http.post(format!("{}/emails", app.address))
            .bearer_auth(&key)
            .json(&json!({"from": "a@acme.test", "to": "r@example.org", "subject": "s", "text": "t",
                          "headers": {"X-Postline-Stream": h, "X-Keep": "1"}}))
            .send()
        };
    let r = rs("broadcast").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let rs_id = v["id"].as_str().unwrap().to_string();
    let r = rs("sometimes").await.unwrap();
    assert_eq!(r.status(), 422);

    for (id, want) in [
        (&plain, "transactional"),
        (&bc, "broadcast"),
        (&pm_id, "broadcast"),
        (&rs_id, "broadcast"),
    ] {
        let m = wait_for(&app, &key, id, |m| m["status"] == "delivered").await;
        assert_eq!(m["stream"], want, "{m}");
    }
    let sent = sink
        .messages()
        .into_iter()
        .find(|m| m.rcpt_to.iter().any(|r| r == "r@example.org"))
        .expect("the Resend message");
    let text = sent.text();
    assert!(text.contains("X-Keep: 1"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("x-postline-stream"),
        "{text}"
    );
    let l = app.get("/v1/emails?stream=transactional", &key).await;
    assert_eq!(l.status, 200, "{}", l.text);
    assert_eq!(l.json["data"].as_array().unwrap().len(), 1, "{}", l.text);
    let bad = app.get("/v1/emails?stream=bulk", &key).await;
    assert_eq!(bad.status, 422, "{}", bad.text);
}

#[tokio::test]
async fn a_broadcast_backlog_behind_a_slow_relay_does_not_delay_transactional_mail() {
    let sink = SmtpSink::start_with(SinkConfig {
        data_delay: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let key = tenant(&app).await;
    for b in 0..30 {
        let emails: Vec<_> = (0..100)
            .map(|i| {
                json!({"from": "news@acme.test", "to": format!("r{b}-{i}@example.org"),
                            "subject": "news", "text": "t", "stream": "broadcast"})
            })
            .collect();
        let r = app
            .post("/v1/emails/batch", &key, json!({"emails": emails}))
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    // The backlog is being worked on.
    assert!(sink.wait_count(5, Duration::from_secs(20)).await);
    let started = Instant::now();
    let r = app
        .post("/v1/emails", &key, json!({"from": "a@acme.test", "to": "reset@example.org", "subject": "Reset", "text": "t"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    wait_for(&app, &key, &id, |m| m["status"] == "delivered").await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "transactional mail took {took:?}"
    );
    let before = sink
        .messages()
        .iter()
        .filter(|m| {
            m.rcpt_to
                .iter()
                .any(|r| r.starts_with('r') && r != "reset@example.org")
        })
        .count();
    assert!(before < 3000, "the backlog was still there: {before} sent");
}
