//! Usage by message stream (issue 26) against the real app, Postgres and an
//! SMTP sink: `?stream=` on the tenant's usage, a tenant key's own usage and
//! the admin's billing listing answers that stream's counters (accepted,
//! delivered, bounced, unsubscribed), the streams add up to the totals, the
//! counters that belong to no stream are absent, and a bad value is 422; a
//! complaint arriving later counts on its message's stream.

use std::time::Duration;

use serde_json::{json, Value};

use crate::bounces::wait_for;
use crate::common::smtp_sink::SmtpSink;
use crate::common::TestApp;

const PUBLIC: &str = "https://mail.postline.test";

fn mail(to: &str, stream: &str) -> Value {
    json!({"from": "news@acme.test", "to": to, "subject": "s", "text": "t", "stream": stream})
}

/// The one-click path (`/u/…`) in the raw message sent to `rcpt`.
async fn unsubscribe_path(sink: &SmtpSink, rcpt: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let raw = sink
            .messages()
            .into_iter()
            .find(|m| m.rcpt_to.iter().any(|r| r == rcpt))
            .map(|m| m.text());
        if let Some(raw) = raw {
            let at = raw.find(&format!("{PUBLIC}/u/")).expect("a one-click link");
            let rest = &raw[at + PUBLIC.len()..];
            return rest[..rest.find('>').expect("the link's end")].to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing sent to {rcpt}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn counters(v: &Value) -> [i64; 5] {
    [
        "emails_sent",
        "emails_delivered",
        "emails_bounced",
        "emails_failed",
        "emails_unsubscribed",
    ]
    .map(|k| {
        v[k].as_i64()
            .unwrap_or_else(|| panic!("{k} missing in {v}"))
    })
}

#[tokio::test]
async fn usage_filters_by_stream_and_the_streams_add_up() {
    let sink = SmtpSink::start().await;
    sink.script("hard@example.org", vec![550]);
    let app = TestApp::spawn_serving(sink.port(), |s| {
        s.unsubscribe.public_url = PUBLIC.into();
    })
    .await;
    let t = app.create_tenant(json!({"name": "Acme"})).await;
    let tid = t["id"].as_str().unwrap().to_string();
    let key = app
        .tenant_key(&tid, &["send", "emails:read", "usage:read"])
        .await;
    // Another tenant's mail counts for it only.
    let other = app.create_tenant(json!({"name": "Other"})).await;
    let okey = app
        .tenant_key(other["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let r = app
        .post("/v1/emails", &okey, mail("o@example.org", "broadcast"))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);

    let mut ids = Vec::new();
    for (to, stream) in [
        ("t1@example.org", "transactional"),
        ("t2@example.org", "transactional"),
        ("t3@example.org", "transactional"),
        ("b1@example.org", "broadcast"),
        ("b2@example.org", "broadcast"),
        ("hard@example.org", "broadcast"),
    ] {
        let r = app.post("/v1/emails", &key, mail(to, stream)).await;
        assert_eq!(r.status, 202, "{}", r.text);
        ids.push(r.json["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        wait_for(&app, &key, id, |m| {
            m["status"] == "delivered" || m["status"] == "bounced"
        })
        .await;
    }
    // One broadcast recipient unsubscribes with the one-click POST.
    let path = unsubscribe_path(&sink, "b1@example.org").await;
    let r = reqwest::Client::new()
        .post(format!("{}{path}", app.address))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let url = |q: &str| format!("/v1/tenants/{tid}/usage{q}");
    let all = app.get(&url(""), &app.admin_key).await;
    assert_eq!(all.status, 200, "{}", all.text);
    let tx = app.get(&url("?stream=transactional"), &app.admin_key).await;
    assert_eq!(tx.status, 200, "{}", tx.text);
    let bc = app.get(&url("?stream=broadcast"), &app.admin_key).await;
    assert_eq!(bc.status, 200, "{}", bc.text);
    assert_eq!(tx.json["stream"], "transactional", "{}", tx.text);
    assert_eq!(bc.json["stream"], "broadcast", "{}", bc.text);
    assert_eq!(counters(&tx.json), [3, 3, 0, 0, 0], "{}", tx.text);
    assert_eq!(counters(&bc.json), [3, 2, 1, 0, 1], "{}", bc.text);
    let (t, b) = (counters(&tx.json), counters(&bc.json));
    let summed: Vec<i64> = t.iter().zip(b).map(|(t, b)| t + b).collect();
    assert_eq!(counters(&all.json).to_vec(), summed, "{}", all.text);
    assert!(all.json.get("stream").is_none(), "{}", all.text);
    // Counters that belong to no stream are absent from a stream's usage.
    assert!(all.json["api_requests"].as_i64().is_some(), "{}", all.text);
    assert!(bc.json.get("api_requests").is_none(), "{}", bc.text);
    // The days add up to the period.
    let days = bc.json["daily"].as_array().unwrap();
    let delivered: i64 = days
        .iter()
        .map(|d| d["emails_delivered"].as_i64().unwrap())
        .sum();
    assert_eq!(delivered, 2, "{}", bc.text);

    // The tenant's own usage with its key, and the admin's billing listing.
    let own = app.get("/v1/usage?stream=broadcast", &key).await;
    assert_eq!(own.status, 200, "{}", own.text);
    assert_eq!(own.json["tenant_id"], tid.as_str());
    assert_eq!(counters(&own.json), [3, 2, 1, 0, 1], "{}", own.text);
    let page = app
        .get("/v1/usage?stream=transactional&limit=100", &app.admin_key)
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    let mine = page.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["tenant_id"] == tid.as_str())
        .expect("the tenant in the listing");
    assert_eq!(counters(mine), [3, 3, 0, 0, 0], "{mine}");
    let theirs = page.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["tenant_id"] == other["id"])
        .expect("the other tenant in the listing");
    assert_eq!(counters(theirs), [0, 0, 0, 0, 0], "{theirs}");

    // A bad stream is a clear 4xx on every form.
    for q in [
        url("?stream=bulk"),
        "/v1/usage?stream=Broadcast".to_string(),
    ] {
        let r = app.get(&q, &app.admin_key).await;
        assert_eq!(r.status, 422, "{q}: {}", r.text);
    }
}

/// A complaint arriving later (ARF over SMTP to the feedback address) counts
/// on the complained message's stream, through `bounces::apply`.
#[tokio::test]
async fn a_later_complaint_counts_on_the_messages_stream() {
    use crate::bounces::{corpus, sent_to, smtp_send, FBL, PERMS};
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), crate::bounces::settings).await;
    let inbound = postline::bounces::inbound::start(&app.state.settings, app.state.pool.clone())
        .await
        .unwrap()
        .expect("inbound.bind is set in tests");
    let t = app.create_tenant(json!({"name": "Acme"})).await;
    let tid = t["id"].as_str().unwrap().to_string();
    let key = app.tenant_key(&tid, PERMS).await;
    let rcpt = "angry@example.org";
    let r = app.post("/v1/emails", &key, mail(rcpt, "broadcast")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    wait_for(&app, &key, &id, |e| e["status"] == "delivered").await;
    let (_, token) = sent_to(&sink, rcpt).await;
    let arf = corpus("arf-01.eml")
        .replace("To: redacted@example.net", &format!("To: {rcpt}"))
        .replace(
            "Return-Path: <support@example.ed.jp>",
            &format!("X-Postline-ID: {token}\nReturn-Path: <support@example.ed.jp>"),
        );
    let codes = smtp_send(inbound.addr(), "fbl@provider.example", &[FBL], &arf).await;
    assert_eq!(codes.last(), Some(&250), "{codes:?}");
    let usage = |stream: &'static str| {
        let (app, tid) = (&app, &tid);
        async move {
            let r = app
                .get(
                    &format!("/v1/tenants/{tid}/usage?stream={stream}"),
                    &app.admin_key,
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.json
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let bc = usage("broadcast").await;
        if bc["emails_complained"] == 1 {
            assert_eq!(bc["emails_delivered"], 1, "{bc}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no complaint counted: {bc}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tx = usage("transactional").await;
    assert_eq!(tx["emails_complained"], 0, "{tx}");
    assert_eq!(tx["emails_sent"], 0, "{tx}");
    inbound.stop().await;
}
