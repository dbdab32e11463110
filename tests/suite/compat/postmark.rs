//! Postmark's batch, message by message, and Postmark's codes where Postline
//! would say 403 — over real HTTP, delivered to the real SMTP sink.

use std::time::Duration;

use serde_json::{json, Value};

use super::{app_with_sink, error_codes, FROM, TO, WAIT};
use crate::common::{Resp, TestApp};

fn pm(subject: &str, to: &str) -> Value {
    json!({"From": FROM, "To": to, "Subject": subject, "TextBody": "t"})
}

fn bad(subject: &str) -> Value {
    json!({"From": "not an address", "To": TO, "Subject": subject, "TextBody": "t"})
}

async fn post(app: &TestApp, path: &str, key: &str, body: Value, idem: Option<&str>) -> Resp {
    let mut req = app
        .client
        .post(format!("{}{path}", app.address))
        .header("X-Postmark-Server-Token", key)
        .json(&body);
    if let Some(k) = idem {
        req = req.header("Idempotency-Key", k);
    }
    TestApp::read(req.send().await.unwrap()).await
}

/// How many messages the tenant has stored (optionally to one recipient).
async fn stored(app: &TestApp, key: &str, recipient: Option<&str>) -> usize {
    let q = recipient
        .map(|r| format!("&recipient={r}"))
        .unwrap_or_default();
    let r = app.get(&format!("/v1/emails?limit=100{q}"), key).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn batch_answers_each_message_and_queues_only_the_valid_ones() {
    let (app, sink, tenant, key) = app_with_sink().await;
    let batch = json!([pm("b1", TO), bad("b2"), pm("b3", TO)]);
    let r = post(&app, "/email/batch", &key, batch.clone(), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(error_codes(&r.json), [0, 300, 0], "{}", r.text);
    let refused = &r.json[1];
    assert!(
        refused["MessageID"].is_null() && refused["To"].is_null(),
        "{refused}"
    );
    assert!(
        refused["Message"].as_str().unwrap().contains("from"),
        "{refused}"
    );
    for ok in [&r.json[0], &r.json[2]] {
        assert_eq!(
            (ok["Message"].as_str(), ok["To"].as_str()),
            (Some("OK"), Some(TO))
        );
        let id = ok["MessageID"].as_str().unwrap();
        let d = app.get(&format!("/v1/emails/{id}"), &key).await;
        assert_eq!(
            d.status, 200,
            "the MessageID is the Postline id: {}",
            d.text
        );
    }
    assert_eq!(
        stored(&app, &key, None).await,
        2,
        "exactly the valid two are queued"
    );
    let got = sink.wait_for(2, WAIT).await;
    let mut subjects: Vec<String> = got
        .iter()
        .filter_map(|m| {
            m.text()
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        })
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["b1", "b3"]);

    // The same request with an Idempotency-Key twice: one answer, two more mails.
    let first = post(&app, "/email/batch", &key, batch.clone(), Some("pm-1")).await;
    let again = post(&app, "/email/batch", &key, batch, Some("pm-1")).await;
    assert_eq!(error_codes(&first.json), [0, 300, 0], "{}", first.text);
    assert_eq!(again.json, first.json, "the replay is the first answer");
    assert_eq!(stored(&app, &key, None).await, 4);
    sink.wait_for(4, WAIT).await;

    // Suppressed addresses: a message with nobody left to send to is 406
    // (and not stored), one with an active recipient too is sent to that one.
    let admin = app.tenant_key(&tenant, &["suppressions:write"]).await;
    let gone = "gone@dest.example";
    let s = app
        .post("/v1/suppressions", &admin, json!({"email": gone}))
        .await;
    assert_eq!(s.status, 201, "{}", s.text);
    let batch = json!([
        pm("s1", gone),
        pm("s2", &format!("{gone}, {TO}")),
        pm("s3", TO)
    ]);
    let r = post(&app, "/email/batch", &key, batch, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(error_codes(&r.json), [406, 0, 0], "{}", r.text);
    let msg = r.json[0]["Message"].as_str().unwrap();
    assert!(msg.contains("inactive") && msg.contains(gone), "{msg}");
    let one = post(&app, "/email", &key, pm("s4", gone), None).await;
    assert_eq!(
        (one.status, one.json["ErrorCode"].as_u64()),
        (422, Some(406)),
        "{}",
        one.text
    );
    assert_eq!(
        stored(&app, &key, Some(gone)).await,
        1,
        "only s2 names the address"
    );
    let got = sink.wait_for(6, WAIT).await;
    let s2 = got
        .iter()
        .find(|m| m.text().contains("Subject: s2"))
        .unwrap();
    assert_eq!(s2.rcpt_to, [TO], "the suppressed address is skipped");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.count(), 6, "nothing else was delivered");
}

#[tokio::test]
async fn whole_request_refusals_queue_nothing() {
    let app = TestApp::spawn().await;
    let t = app
        .create_tenant(json!({"name": "Quota", "rate_limit": {"emails_per_day": 2}}))
        .await;
    let key = app
        .tenant_key(t["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    // Every message refused: still 200, one entry each, nothing stored.
    let r = post(
        &app,
        "/email/batch",
        &key,
        json!([bad("x1"), bad("x2")]),
        None,
    )
    .await;
    assert_eq!(
        (r.status, error_codes(&r.json)),
        (200, vec![300, 300]),
        "{}",
        r.text
    );
    // Three valid messages against a quota of two: the whole request is 429.
    let three = json!([pm("q1", TO), bad("q2"), pm("q3", TO), pm("q4", TO)]);
    let r = post(&app, "/email/batch", &key, three, None).await;
    assert_eq!(
        (r.status, r.json["ErrorCode"].as_u64()),
        (429, Some(429)),
        "{}",
        r.text
    );
    assert!(r.header("retry-after").is_some());
    assert_eq!(stored(&app, &key, None).await, 0);
    // Exactly the quota, with a refused message beside them: accepted.
    let two = json!([pm("q1", TO), bad("q2"), pm("q3", TO)]);
    let r = post(&app, "/email/batch", &key, two, None).await;
    assert_eq!(error_codes(&r.json), [0, 300, 0], "{}", r.text);
    assert_eq!(stored(&app, &key, None).await, 2);
    let r = post(&app, "/email/batch", &key, json!([pm("q5", TO)]), None).await;
    assert_eq!(r.status, 429, "{}", r.text);
    // Not a list: one whole-request 422/300.
    let r = post(&app, "/email/batch", &key, pm("o", TO), None).await;
    assert_eq!(
        (r.status, r.json["ErrorCode"].as_u64()),
        (422, Some(300)),
        "{}",
        r.text
    );
    let r = post(&app, "/email/batch", &key, json!([]), None).await;
    assert_eq!(
        (r.status, r.json["ErrorCode"].as_u64()),
        (422, Some(300)),
        "{}",
        r.text
    );
    assert_eq!(stored(&app, &key, None).await, 2);
}

#[tokio::test]
async fn refusals_postline_calls_403_get_postmarks_codes() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant(json!({"name": "Codes"})).await;
    let id = t["id"].as_str().unwrap();
    let read_only = app.tenant_key(id, &["emails:read"]).await;
    let sender = app.tenant_key(id, &["send"]).await;
    for path in ["/email", "/email/batch"] {
        let body = match path {
            "/email" => pm("c", TO),
            _ => json!([pm("c", TO)]),
        };
        for (who, key) in [
            ("an admin key", &app.admin_key),
            ("a key without send", &read_only),
        ] {
            let r = post(&app, path, key, body.clone(), None).await;
            assert_eq!(r.status, 401, "{path}, {who}: {}", r.text);
            assert_eq!(r.json["ErrorCode"], 10, "{path}, {who}: {}", r.text);
            assert!(r.json["Message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            &app.admin_key,
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for path in ["/email", "/email/batch"] {
        let body = match path {
            "/email" => pm("c", TO),
            _ => json!([pm("c", TO)]),
        };
        let r = post(&app, path, &sender, body, None).await;
        assert_eq!(r.status, 422, "{path}, a suspended tenant: {}", r.text);
        assert_eq!(r.json["ErrorCode"], 413, "{path}: {}", r.text);
    }
    assert_eq!(stored(&app, &app.admin_key, None).await, 0);
}
