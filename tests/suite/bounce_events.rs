//! Bounce-side events, usage and fencing (issue 13): a complaint counts in
//! usage `emails_complained` and fires a signed `email.complained` to a real
//! webhook receiver; a suppressed send counts in `emails_suppressed` and
//! fires `email.suppressed`; a per-recipient outcome under a stale fence
//! changes no recipient, suppression or event; a DSN whose text decodes to a
//! NUL byte is recorded (not answered 451 forever).

use std::time::Duration;

use diesel::prelude::*;
use serde_json::{json, Value};

use crate::bounces::{
    corpus, recipient, send, sent_to, smtp_send, suppressions, wait_for, FBL, WAIT,
};
use crate::common::smtp_sink::SmtpSink;
use crate::common::webhook_receiver::{Hook, Receiver};
use crate::common::{self, TestApp};
use postline::bounces::recipients::Update;
use postline::queue::model::{self as queue_db, Lease};
use postline::queue::record::{self, Outcome, RcptOutcome, Resolution};

struct Setup {
    app: TestApp,
    sink: SmtpSink,
    tenant: String,
    key: String,
    rx: Receiver,
}

/// A serving app with a tenant subscribed to `events` at a real receiver.
async fn setup(events: &[&str]) -> Setup {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), crate::bounces::settings).await;
    let t = app.create_tenant(json!({"name": "Acme"})).await;
    let tenant = t["id"].as_str().unwrap().to_string();
    let key = app.tenant_key(&tenant, crate::bounces::PERMS).await;
    let rx = Receiver::start().await;
    let hook = app
        .post(
            "/v1/webhooks",
            &key,
            json!({"url": rx.url("/hook"), "events": events}),
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.text);
    rx.add_secret(hook.json["secret"].as_str().unwrap());
    Setup {
        app,
        sink,
        tenant,
        key,
        rx,
    }
}

async fn hook_of(rx: &Receiver, kind: &str) -> Hook {
    let hooks = rx
        .wait_until(WAIT, |h| h.iter().any(|x| x.body["type"] == kind))
        .await;
    hooks
        .into_iter()
        .find(|x| x.body["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} webhook"))
}

async fn usage(app: &TestApp, tenant: &str) -> Value {
    let u = app
        .get(&format!("/v1/tenants/{tenant}/usage"), &app.admin_key)
        .await;
    assert_eq!(u.status, 200, "{}", u.text);
    u.json
}

#[tokio::test]
async fn a_complaint_counts_in_usage_and_fires_a_signed_email_complained() {
    let s = setup(&["email.complained"]).await;
    let inbound =
        postline::bounces::inbound::start(&s.app.state.settings, s.app.state.pool.clone())
            .await
            .unwrap()
            .unwrap();
    let rcpt = "angry@example.org";
    let id = send(&s.app, &s.key, json!(rcpt)).await;
    wait_for(&s.app, &s.key, &id, |e| e["status"] == "delivered").await;
    assert_eq!(usage(&s.app, &s.tenant).await["emails_complained"], 0);
    let (_, token) = sent_to(&s.sink, rcpt).await;
    let arf = corpus("arf-01.eml")
        .replace("To: redacted@example.net", &format!("To: {rcpt}"))
        .replace(
            "Return-Path: <support@example.ed.jp>",
            &format!("X-Postline-ID: {token}\nReturn-Path: <support@example.ed.jp>"),
        );
    let codes = smtp_send(inbound.addr(), "fbl@provider.example", &[FBL], &arf).await;
    assert_eq!(codes.last(), Some(&250), "{codes:?}");
    let h = hook_of(&s.rx, "email.complained").await;
    assert!(h.verified, "signature does not verify: {:?}", h.body);
    assert_eq!(h.body["data"]["email_id"], id.as_str());
    assert_eq!(h.body["data"]["recipient"], rcpt);
    assert!(h.body["data"]["feedback_type"].is_string(), "{}", h.body);
    assert_eq!(usage(&s.app, &s.tenant).await["emails_complained"], 1);
    // The same report again changes nothing and counts nothing.
    let codes = smtp_send(inbound.addr(), "fbl@provider.example", &[FBL], &arf).await;
    assert_eq!(codes.last(), Some(&250), "{codes:?}");
    assert_eq!(usage(&s.app, &s.tenant).await["emails_complained"], 1);
    inbound.stop().await;
}

#[tokio::test]
async fn a_suppressed_send_counts_in_usage_and_fires_email_suppressed() {
    let s = setup(&["email.suppressed"]).await;
    let r = s
        .app
        .post(
            "/v1/suppressions",
            &s.key,
            json!({"email": "blocked@example.org"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = send(
        &s.app,
        &s.key,
        json!(["blocked@example.org", "ok@example.org"]),
    )
    .await;
    let email = wait_for(&s.app, &s.key, &id, |e| e["status"] == "delivered").await;
    assert_eq!(
        recipient(&email, "blocked@example.org")["status"],
        "suppressed"
    );
    let h = hook_of(&s.rx, "email.suppressed").await;
    assert!(h.verified, "signature does not verify: {:?}", h.body);
    assert_eq!(h.body["data"]["email_id"], id.as_str());
    assert_eq!(h.body["data"]["recipient"], "blocked@example.org");
    assert_eq!(usage(&s.app, &s.tenant).await["emails_suppressed"], 1);
    // Only the other recipient reached the relay.
    let got = s.sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec!["ok@example.org"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.rx.received().len(),
        1,
        "one suppressed recipient, one event"
    );
}

#[tokio::test]
async fn a_per_recipient_outcome_with_a_stale_fence_is_ignored() {
    let app = TestApp::spawn_with(crate::bounces::settings).await;
    let t = app.create_tenant(json!({"name": "A"})).await;
    let key = app
        .tenant_key(t["id"].as_str().unwrap(), crate::bounces::PERMS)
        .await;
    let id = send(&app, &key, json!(["a@example.org", "b@example.org"])).await;
    let mut conn = app.sql_conn();
    // Worker 1 claims with a 2 s lease and hangs; the message is reclaimed
    // and claimed again by worker 2.
    let first = common::claim_as_worker(&mut conn, 10, 2.0).messages;
    assert_eq!(first.len(), 1);
    let stale = first[0].lease;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let (reclaimed, _) = queue_db::reclaim_expired(&mut conn, 5).unwrap();
    assert_eq!(reclaimed, 1);
    let second = common::claim_as_worker(&mut conn, 10, 30.0).messages;
    assert_eq!(second.len(), 1);
    let fresh = second[0].lease;
    assert!(fresh.fence > stale.fence);
    let rcpt = |addr: &str, status: &'static str, response: &str, hard: bool| RcptOutcome {
        update: Update {
            recipient: addr.into(),
            status,
            smtp_response: Some(response.into()),
            bounce: (status == "bounced")
                .then(|| json!({"type": "hard", "status": "5.1.1", "diagnostic": response})),
        },
        suppress: hard.then_some(None),
    };
    let late = |lease: Lease| Outcome {
        lease,
        attempt: 1,
        resolution: Resolution::Deferred {
            response: "451 later".into(),
            next_attempt_at: chrono::Utc::now(),
        },
        recipients: vec![
            rcpt("a@example.org", "bounced", "550 5.1.1 no such user", true),
            rcpt("b@example.org", "deferred", "451 later", false),
        ],
    };
    // Worker 1 reports late: no recipient, suppression or event changes.
    assert!(record::record(&mut conn, &[late(stale)])
        .unwrap()
        .changed
        .is_empty());
    let email = wait_for(&app, &key, &id, |_| true).await;
    for a in ["a@example.org", "b@example.org"] {
        assert_eq!(recipient(&email, a)["status"], "queued", "{email}");
    }
    assert!(suppressions(&app).is_empty());
    assert!(
        !email["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "email.bounced"),
        "{email}"
    );
    // Worker 2's outcome holds the fence: both delivered.
    let done = Outcome {
        lease: fresh,
        attempt: 1,
        resolution: Resolution::Delivered {
            response: "250 ok".into(),
        },
        recipients: vec![
            rcpt("a@example.org", "delivered", "250 ok", false),
            rcpt("b@example.org", "delivered", "250 ok", false),
        ],
    };
    assert_eq!(record::record(&mut conn, &[done]).unwrap().changed.len(), 1);
    // And worker 1 still cannot touch them afterwards.
    assert!(record::record(&mut conn, &[late(stale)])
        .unwrap()
        .changed
        .is_empty());
    let email = wait_for(&app, &key, &id, |e| e["status"] == "delivered").await;
    for a in ["a@example.org", "b@example.org"] {
        assert_eq!(recipient(&email, a)["status"], "delivered", "{email}");
    }
    assert!(suppressions(&app).is_empty());
    let n: i64 = postline::db::schema::email_recipients::table
        .filter(postline::db::schema::email_recipients::status.eq("bounced"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_dsn_whose_text_decodes_to_a_nul_byte_is_recorded() {
    let s = setup(&["email.bounced"]).await;
    let inbound =
        postline::bounces::inbound::start(&s.app.state.settings, s.app.state.pool.clone())
            .await
            .unwrap()
            .unwrap();
    let rcpt = "kijitora@example.org";
    let id = send(&s.app, &s.key, json!(rcpt)).await;
    wait_for(&s.app, &s.key, &id, |e| e["status"] == "delivered").await;
    let (return_path, _) = sent_to(&s.sink, rcpt).await;
    // Office 365's text has `LinkId=00000000` in quoted-printable: a NUL.
    let dsn = corpus("lhost-office365-01.eml").replace("kijitora@example.com", rcpt);
    assert!(dsn.contains("LinkId=00000000"));
    let codes = smtp_send(inbound.addr(), "", &[&return_path], &dsn).await;
    assert_eq!(codes.last(), Some(&250), "{codes:?}");
    let email = wait_for(&s.app, &s.key, &id, |e| e["status"] == "bounced").await;
    let b = &recipient(&email, rcpt)["bounce"];
    assert_eq!(b["status"], "5.1.10", "{email}");
    assert!(!b["diagnostic"].as_str().unwrap().contains('\0'));
    let h = hook_of(&s.rx, "email.bounced").await;
    assert!(h.verified);
    assert_eq!(h.body["data"]["recipient"], rcpt);
    inbound.stop().await;
}
