//! Scheduled send, reschedule and cancel (issue 14): real HTTP, Postgres and
//! an SMTP sink on a socket.

use crate::common;

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use common::smtp_sink::SmtpSink;
use common::TestApp;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

async fn tenant_with_key(app: &TestApp, body: Value) -> (String, String) {
    let t = app.create_tenant(body).await;
    let id = t["id"].as_str().unwrap().to_string();
    let key = app.tenant_key(&id, &["send", "emails:read"]).await;
    (id, key)
}

fn in_secs(s: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(s)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn body(to: &str, scheduled_at: Option<&str>) -> Value {
    let mut b = json!({"from": "a@acme.example", "to": to, "subject": "s", "text": "t"});
    if let Some(at) = scheduled_at {
        b["scheduled_at"] = json!(at);
    }
    b
}

async fn schedule(app: &TestApp, key: &str, to: &str, at: &str) -> String {
    let r = app.post("/v1/emails", key, body(to, Some(at))).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["status"], "scheduled", "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

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
            "{id} never reached {status}: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn event_types(detail: &Value) -> Vec<String> {
    detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn scheduled_mail_is_delivered_no_earlier_than_scheduled_at() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let at = in_secs(3);
    let (t0, now0) = (Instant::now(), Utc::now());
    let id = schedule(&app, &key, "x@dest.example", &at).await;
    let r = app.get(&format!("/v1/emails/{id}"), &key).await;
    assert_eq!(r.json["status"], "scheduled", "{}", r.text);
    let stored: DateTime<Utc> = r.json["scheduled_at"].as_str().unwrap().parse().unwrap();
    let wanted: DateTime<Utc> = at.parse().unwrap();
    assert_eq!(stored, wanted);
    assert_eq!(event_types(&r.json), ["email.scheduled"]);
    let listed = app.get("/v1/emails?status=scheduled", &key).await;
    assert_eq!(listed.json["data"][0]["id"], id.as_str(), "{}", listed.text);
    // Mail sent at once in the same run goes out while this one waits.
    let now_id = app
        .post("/v1/emails", &key, body("y@dest.example", None))
        .await;
    assert_eq!(now_id.json["status"], "queued");
    let got = sink.wait_for(2, WAIT).await;
    let scheduled = got
        .iter()
        .find(|m| m.rcpt_to == ["x@dest.example"])
        .expect("the scheduled message arrived");
    let due = t0 + (wanted - now0).to_std().unwrap();
    // 5 ms for mapping the wall clock onto the monotonic one.
    assert!(
        scheduled.received_at + Duration::from_millis(5) >= due,
        "delivered {:?} before scheduled_at",
        due - scheduled.received_at
    );
    assert!(
        got[0].rcpt_to == ["y@dest.example"],
        "the immediate mail went first"
    );
    let done = wait_status(&app, &key, &id, "delivered").await;
    assert_eq!(event_types(&done)[0], "email.scheduled");
}

#[tokio::test]
async fn cancel_before_the_time_means_never_sent_and_after_delivery_is_409() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let (tenant, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let id = schedule(&app, &key, "x@dest.example", &in_secs(2)).await;
    let r = app
        .post(&format!("/v1/emails/{id}/cancel"), &key, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "canceled");
    assert_eq!(event_types(&r.json), ["email.scheduled", "email.canceled"]);
    let again = app
        .post(&format!("/v1/emails/{id}/cancel"), &key, json!({}))
        .await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(again.json["code"], "email_not_cancelable");
    // A message sent at once, delivered, cannot be canceled any more.
    let now = app
        .post("/v1/emails", &key, body("y@dest.example", None))
        .await;
    let now_id = now.json["id"].as_str().unwrap().to_string();
    wait_status(&app, &key, &now_id, "delivered").await;
    let late = app
        .post(&format!("/v1/emails/{now_id}/cancel"), &key, json!({}))
        .await;
    assert_eq!(late.status, 409, "{}", late.text);
    assert_eq!(late.json["code"], "email_not_cancelable");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1, "the canceled message was sent");
    assert_eq!(msgs[0].rcpt_to, ["y@dest.example"]);
    // The admin form, on a queued message of a tenant whose mail waits.
    let admin = app.admin_key.clone();
    let id2 = schedule(&app, &key, "z@dest.example", &in_secs(600)).await;
    let path = format!("/v1/tenants/{tenant}/emails/{id2}/cancel");
    let r = app.post(&path, &admin, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "canceled");
}

#[tokio::test]
async fn reschedule_moves_the_message_both_ways() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let (tenant, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let early = schedule(&app, &key, "early@dest.example", &in_secs(3600)).await;
    let late = schedule(&app, &key, "late@dest.example", &in_secs(2)).await;
    let at = in_secs(2);
    let r = app
        .patch(
            &format!("/v1/emails/{early}"),
            &key,
            json!({"scheduled_at": at}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "scheduled");
    let stored: DateTime<Utc> = r.json["scheduled_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(stored, at.parse::<DateTime<Utc>>().unwrap());
    let admin = app.admin_key.clone();
    let r = app
        .patch(
            &format!("/v1/tenants/{tenant}/emails/{late}"),
            &admin,
            json!({"scheduled_at": in_secs(3600)}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let done = wait_status(&app, &key, &early, "delivered").await;
    assert_eq!(
        event_types(&done)[..2],
        ["email.scheduled", "email.scheduled"]
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1, "the postponed message was sent");
    assert_eq!(msgs[0].rcpt_to, ["early@dest.example"]);
    // Delivered: no longer reschedulable.
    let r = app
        .patch(
            &format!("/v1/emails/{early}"),
            &key,
            json!({"scheduled_at": in_secs(60)}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.json["code"], "email_not_reschedulable");
    // Mail sent at once was never scheduled.
    let now = app
        .post("/v1/emails", &key, body("n@dest.example", None))
        .await;
    let now_id = now.json["id"].as_str().unwrap();
    wait_status(&app, &key, now_id, "delivered").await;
    let r = app
        .patch(
            &format!("/v1/emails/{now_id}"),
            &key,
            json!({"scheduled_at": in_secs(60)}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
}

#[tokio::test]
async fn scheduled_at_out_of_bounds_is_422_and_queues_nothing() {
    let app = TestApp::spawn().await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let thirty = Utc::now() + chrono::Duration::days(30);
    let cases = [
        (in_secs(30 * 86400 + 60), "must be at most 30 days ahead"),
        (in_secs(-1), "must be in the future"),
        ("tomorrow at nine".to_string(), "RFC 3339"),
        ("2030-01-01 09:00".to_string(), "RFC 3339"),
    ];
    for (at, why) in &cases {
        let r = app
            .post("/v1/emails", &key, body("x@dest.example", Some(at)))
            .await;
        assert_eq!(r.status, 422, "{at}: {}", r.text);
        assert_eq!(r.json["errors"][0]["field"], "scheduled_at", "{}", r.text);
        assert!(r.text.contains(why), "{at}: {}", r.text);
    }
    // Just inside the bound (a minute of margin for a slow machine).
    let ok = (thirty - chrono::Duration::minutes(1)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let r = app
        .post("/v1/emails", &key, body("x@dest.example", Some(&ok)))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let batch = json!({"emails": [body("a@dest.example", Some(&in_secs(60))),
                                  body("b@dest.example", Some(&in_secs(-60)))]});
    let r = app.post("/v1/emails/batch", &key, batch).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.json["errors"][0]["field"], "emails[1].scheduled_at",
        "{}",
        r.text
    );
    let listed = app.get("/v1/emails", &key).await;
    assert_eq!(
        listed.json["data"].as_array().unwrap().len(),
        1,
        "{}",
        listed.text
    );
    // PATCH with a bad time changes nothing.
    let id = listed.json["data"][0]["id"].as_str().unwrap();
    let r = app
        .patch(
            &format!("/v1/emails/{id}"),
            &key,
            json!({"scheduled_at": in_secs(40 * 86400)}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let after = app.get(&format!("/v1/emails/{id}"), &key).await;
    let kept: DateTime<Utc> = after.json["scheduled_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(kept, ok.parse::<DateTime<Utc>>().unwrap());
}

#[tokio::test]
async fn another_tenants_message_is_not_found_and_untouched() {
    let app = TestApp::spawn().await;
    let (_, key_a) = tenant_with_key(&app, json!({"name": "A"})).await;
    let (_, key_b) = tenant_with_key(&app, json!({"name": "B"})).await;
    let id = schedule(&app, &key_a, "x@dest.example", &in_secs(600)).await;
    let r = app
        .post(&format!("/v1/emails/{id}/cancel"), &key_b, json!({}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let missing = app
        .post(
            &format!("/v1/emails/{}/cancel", uuid::Uuid::new_v4()),
            &key_b,
            json!({}),
        )
        .await;
    assert_eq!(
        r.text, missing.text,
        "a foreign id reads exactly like a missing one"
    );
    let r = app
        .patch(
            &format!("/v1/emails/{id}"),
            &key_b,
            json!({"scheduled_at": in_secs(60)}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let mine = app.get(&format!("/v1/emails/{id}"), &key_a).await;
    assert_eq!(mine.json["status"], "scheduled");
    assert_eq!(event_types(&mine.json), ["email.scheduled"]);
}

/// A worker holding a lease keeps its message: cancel and reschedule are
/// conditioned on an unleased queue row in the same statement.
#[tokio::test]
async fn a_leased_message_cannot_be_canceled_or_moved() {
    let app = TestApp::spawn().await;
    let (_, key) = tenant_with_key(&app, json!({"name": "A"})).await;
    let id = schedule(&app, &key, "x@dest.example", &in_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let claim = common::claim_as_worker(&mut app.sql_conn(), 10, 60.0);
    assert_eq!(
        claim.messages.len(),
        1,
        "the due scheduled message is claimed"
    );
    let r = app.get(&format!("/v1/emails/{id}"), &key).await;
    assert_eq!(r.json["status"], "sending", "{}", r.text);
    let r = app
        .post(&format!("/v1/emails/{id}/cancel"), &key, json!({}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.json["code"], "email_not_cancelable");
    let r = app
        .patch(
            &format!("/v1/emails/{id}"),
            &key,
            json!({"scheduled_at": in_secs(60)}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    // The fence still matches: the worker's outcome would be recorded.
    use diesel::prelude::*;
    let fence: i64 = postline::db::schema::email_queue::table
        .select(postline::db::schema::email_queue::fence)
        .first(&mut app.sql_conn())
        .unwrap();
    assert_eq!(fence, claim.messages[0].lease.fence);
}

/// Scheduled mail is charged to the day it is accepted, and a suspension
/// and reactivation keep its time.
#[tokio::test]
async fn scheduled_mail_counts_against_the_accept_day_and_survives_suspension() {
    let app = TestApp::spawn().await;
    let (tenant, key) = tenant_with_key(
        &app,
        json!({"name": "A", "rate_limit": {"emails_per_day": 1}}),
    )
    .await;
    let at = in_secs(7 * 86400);
    let id = schedule(&app, &key, "x@dest.example", &at).await;
    let r = app
        .post("/v1/emails", &key, body("y@dest.example", None))
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.json["code"], "daily_quota_exceeded");
    let admin = app.admin_key.clone();
    for status in ["suspended", "active"] {
        let r = app
            .patch(
                &format!("/v1/tenants/{tenant}"),
                &admin,
                json!({"status": status}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = app.get(&format!("/v1/emails/{id}"), &key).await;
    assert_eq!(r.json["status"], "scheduled", "{}", r.text);
    let next: DateTime<Utc> = r.json["next_attempt_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        next,
        at.parse::<DateTime<Utc>>().unwrap(),
        "reactivation moved the schedule"
    );
}
