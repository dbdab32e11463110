//! Bounces, complaints and suppressions (issue 13), over real sockets: the
//! worker against the SMTP sink (per-RCPT replies), DSNs and ARF reports
//! sent over SMTP to the real inbound listener, the suppression API.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::smtp_sink::SmtpSink;
use common::webhook_receiver::Receiver;
use common::TestApp;
use diesel::prelude::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub const WAIT: Duration = Duration::from_secs(20);
pub const BOUNCE_DOMAIN: &str = "bounces.postline.test";
pub const FBL: &str = "fbl@postline.test";
pub const PERMS: &[&str] = &[
    "send",
    "emails:read",
    "suppressions:read",
    "suppressions:write",
    "webhooks:write",
];

/// The corpus the repository carries (`tests/corpus/bounces`, with its licence).
pub fn corpus_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bounces");
    assert!(
        dir.join("LICENSE-sisimai-set-of-emails.txt").is_file(),
        "bounce corpus missing: expected it at {} (tests/corpus/bounces in the repository)",
        dir.display()
    );
    dir
}

pub fn corpus(name: &str) -> String {
    std::fs::read_to_string(corpus_dir().join(name)).expect("corpus file")
}

pub fn settings(s: &mut postline::config::Settings) {
    s.bounces.domain = BOUNCE_DOMAIN.into();
    s.bounces.fbl_address = FBL.into();
    s.webhooks.retry_initial_ms = 100;
}

struct Setup {
    app: TestApp,
    sink: SmtpSink,
    inbound: postline::smtp_server::Server,
    key: String,
}

async fn setup() -> Setup {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), settings).await;
    let inbound = postline::bounces::inbound::start(&app.state.settings, app.state.pool.clone())
        .await
        .unwrap()
        .expect("inbound.bind is set in tests");
    let t = app.create_tenant(json!({"name": "Acme"})).await;
    let key = app.tenant_key(t["id"].as_str().unwrap(), PERMS).await;
    Setup {
        app,
        sink,
        inbound,
        key,
    }
}

pub async fn send(app: &TestApp, key: &str, to: Value) -> String {
    let r = app
        .post(
            "/v1/emails",
            key,
            json!({"from": "noreply@acme.test", "to": to, "subject": "Hi", "text": "Hello"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

pub async fn wait_for(app: &TestApp, key: &str, id: &str, what: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = app.get(&format!("/v1/emails/{id}"), key).await;
        assert_eq!(r.status, 200, "{}", r.text);
        if what(&r.json) {
            return r.json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "email {id} never got there: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn recipient<'a>(email: &'a Value, addr: &str) -> &'a Value {
    email["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["email"] == addr)
        .unwrap_or_else(|| panic!("no recipient {addr} in {email}"))
}

/// A minimal SMTP client: the reply code of each step (it stops at the
/// first refusal of MAIL or of every RCPT).
pub async fn smtp_send(
    addr: std::net::SocketAddr,
    from: &str,
    rcpts: &[&str],
    data: &str,
) -> Vec<u16> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> u16 {
        loop {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            }
        }
    }
    let mut codes = vec![reply(&mut r).await];
    w.write_all(b"EHLO tester.example\r\n").await.unwrap();
    codes.push(reply(&mut r).await);
    w.write_all(format!("MAIL FROM:<{from}>\r\n").as_bytes())
        .await
        .unwrap();
    codes.push(reply(&mut r).await);
    let mut any = false;
    for rcpt in rcpts {
        w.write_all(format!("RCPT TO:<{rcpt}>\r\n").as_bytes())
            .await
            .unwrap();
        let c = reply(&mut r).await;
        any |= c == 250;
        codes.push(c);
    }
    if any {
        w.write_all(b"DATA\r\n").await.unwrap();
        codes.push(reply(&mut r).await);
        let mut body = String::new();
        for line in data.lines() {
            if line.starts_with('.') {
                body.push('.');
            }
            body.push_str(line);
            body.push_str("\r\n");
        }
        body.push_str(".\r\n");
        w.write_all(body.as_bytes()).await.unwrap();
        codes.push(reply(&mut r).await);
    }
    w.write_all(b"QUIT\r\n").await.unwrap();
    codes
}

/// The return path and `X-Postline-ID` of the message the sink got for `rcpt`.
pub async fn sent_to(sink: &SmtpSink, rcpt: &str) -> (String, String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(m) = sink
            .messages()
            .into_iter()
            .find(|m| m.rcpt_to.iter().any(|r| r == rcpt))
        {
            let text = m.text();
            let token = text
                .lines()
                .find_map(|l| l.strip_prefix("X-Postline-ID: "))
                .expect("X-Postline-ID header")
                .trim()
                .to_string();
            return (m.mail_from.clone(), token);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing sent to {rcpt}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn suppressions(app: &TestApp) -> Vec<(String, String)> {
    use postline::db::schema::suppressions::dsl::*;
    suppressions
        .select((email, reason))
        .order(email)
        .load(&mut app.sql_conn())
        .unwrap()
}

#[tokio::test]
async fn a_relay_refusing_one_rcpt_and_deferring_another_is_recorded_per_recipient() {
    let s = setup().await;
    s.sink.script("gone@example.org", vec![550]);
    s.sink.script("later@example.org", vec![451, 250]);
    let id = send(
        &s.app,
        &s.key,
        json!(["ok@example.org", "gone@example.org", "later@example.org"]),
    )
    .await;
    let email = wait_for(&s.app, &s.key, &id, |e| e["status"] == "delivered").await;
    assert_eq!(recipient(&email, "ok@example.org")["status"], "delivered");
    assert_eq!(
        recipient(&email, "later@example.org")["status"],
        "delivered"
    );
    let gone = recipient(&email, "gone@example.org");
    assert_eq!(gone["status"], "bounced", "{email}");
    assert_eq!(gone["bounce"]["type"], "hard");
    assert_eq!(gone["bounce"]["status"], "5.1.1");
    // Two transactions: the first to ok only, the retry to later only.
    let got = s.sink.wait_for(2, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec!["ok@example.org"]);
    assert_eq!(got[1].rcpt_to, vec!["later@example.org"]);
    assert!(got[0].mail_from.starts_with("b+") && got[0].mail_from.ends_with(BOUNCE_DOMAIN));
    let bounced: Vec<&Value> = email["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "email.bounced")
        .collect();
    assert_eq!(bounced.len(), 1, "{email}");
    assert_eq!(bounced[0]["detail"]["recipient"], "gone@example.org");
    assert_eq!(
        suppressions(&s.app),
        vec![("gone@example.org".into(), "hard_bounce".into())]
    );
    // The suppressed address is refused at the next send, which never reaches the relay.
    let next = send(&s.app, &s.key, json!("gone@example.org")).await;
    let email = wait_for(&s.app, &s.key, &next, |e| e["status"] == "suppressed").await;
    assert_eq!(
        recipient(&email, "gone@example.org")["status"],
        "suppressed"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.sink.count(), 2);
    s.inbound.stop().await;
}

#[tokio::test]
async fn a_corpus_dsn_for_a_delivered_message_bounces_suppresses_and_fires_the_webhook() {
    let s = setup().await;
    let rx = Receiver::start().await;
    let hook = s
        .app
        .post(
            "/v1/webhooks",
            &s.key,
            json!({"url": rx.url("/hook"), "events": ["email.bounced"]}),
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.text);
    rx.add_secret(hook.json["secret"].as_str().unwrap());
    let rcpt = "kim@example.org";
    let id = send(&s.app, &s.key, json!(rcpt)).await;
    wait_for(&s.app, &s.key, &id, |e| e["status"] == "delivered").await;
    let (return_path, _) = sent_to(&s.sink, rcpt).await;
    // The DSN of another sender's message, rewritten to ours.
    let dsn = corpus("rfc3464-01.eml").replace("userunknown@bouncehammer.jp", rcpt);
    let codes = smtp_send(s.inbound.addr(), "", &[&return_path], &dsn).await;
    assert_eq!(codes.last(), Some(&250), "{codes:?}");
    let email = wait_for(&s.app, &s.key, &id, |e| e["status"] == "bounced").await;
    let r = recipient(&email, rcpt);
    assert_eq!(r["bounce"]["type"], "hard");
    assert_eq!(r["bounce"]["status"], "5.1.1");
    assert_eq!(
        suppressions(&s.app),
        vec![(rcpt.to_string(), "hard_bounce".into())]
    );
    let hooks = rx
        .wait_until(WAIT, |h| {
            h.iter().any(|x| x.body["type"] == "email.bounced")
        })
        .await;
    let h = hooks
        .iter()
        .find(|x| x.body["type"] == "email.bounced")
        .unwrap();
    assert!(h.verified);
    assert_eq!(h.body["data"]["recipient"], rcpt);
    assert_eq!(h.body["data"]["bounce"]["status"], "5.1.1");
    assert_eq!(h.body["data"]["bounce"]["type"], "hard");
    let before = s.sink.count();
    let next = send(&s.app, &s.key, json!(rcpt)).await;
    wait_for(&s.app, &s.key, &next, |e| e["status"] == "suppressed").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.sink.count(),
        before,
        "a suppressed address reached the relay"
    );
    // Usage counts the suppressed recipient.
    s.inbound.stop().await;
}

#[tokio::test]
async fn a_soft_bounce_is_recorded_but_not_suppressed() {
    let s = setup().await;
    let rcpt = "full@example.org";
    let id = send(&s.app, &s.key, json!(rcpt)).await;
    wait_for(&s.app, &s.key, &id, |e| e["status"] == "delivered").await;
    let (return_path, _) = sent_to(&s.sink, rcpt).await;
    let dsn = corpus("rfc3464-01.eml")
        .replace("userunknown@bouncehammer.jp", rcpt)
        .replace("Status: 5.1.1", "Status: 5.2.2")
        .replace("550 5.1.1 <", "552 5.2.2 <")
        .replace("User Unknown", "Mailbox full");
    let codes = smtp_send(s.inbound.addr(), "", &[&return_path], &dsn).await;
    assert_eq!(codes.last(), Some(&250), "{codes:?}");
    let email = wait_for(&s.app, &s.key, &id, |e| {
        recipient(e, rcpt)["status"] == "bounced"
    })
    .await;
    assert_eq!(recipient(&email, rcpt)["bounce"]["type"], "soft");
    assert!(suppressions(&s.app).is_empty());
    let next = send(&s.app, &s.key, json!(rcpt)).await;
    wait_for(&s.app, &s.key, &next, |e| e["status"] == "delivered").await;
    s.inbound.stop().await;
}

#[tokio::test]
async fn an_arf_complaint_marks_the_recipient_complained_and_suppresses_it() {
    let s = setup().await;
    let rcpt = "angry@example.org";
    let id = send(&s.app, &s.key, json!(rcpt)).await;
    wait_for(&s.app, &s.key, &id, |e| e["status"] == "delivered").await;
    let (_, token) = sent_to(&s.sink, rcpt).await;
    // The provider's report quotes our message, with its X-Postline-ID.
    let arf = corpus("arf-01.eml")
        .replace("To: redacted@example.net", &format!("To: {rcpt}"))
        .replace(
            "Return-Path: <support@example.ed.jp>",
            &format!("X-Postline-ID: {token}\nReturn-Path: <support@example.ed.jp>"),
        );
    let codes = smtp_send(s.inbound.addr(), "fbl@provider.example", &[FBL], &arf).await;
    assert_eq!(codes.last(), Some(&250), "{codes:?}");
    let email = wait_for(&s.app, &s.key, &id, |e| {
        recipient(e, rcpt)["status"] == "complained"
    })
    .await;
    assert!(email["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "email.complained"));
    assert_eq!(
        suppressions(&s.app),
        vec![(rcpt.to_string(), "complaint".into())]
    );
    let entry = s.app.get(&format!("/v1/suppressions/{rcpt}"), &s.key).await;
    assert_eq!(entry.status, 200, "{}", entry.text);
    assert_eq!(entry.json["expires_at"], Value::Null);
    s.inbound.stop().await;
}

#[tokio::test]
async fn forged_tokens_and_other_domains_get_550() {
    let s = setup().await;
    let rcpt = "victim@example.org";
    let id = send(&s.app, &s.key, json!(rcpt)).await;
    wait_for(&s.app, &s.key, &id, |e| e["status"] == "delivered").await;
    let (return_path, token) = sent_to(&s.sink, rcpt).await;
    let dsn = corpus("rfc3464-01.eml").replace("userunknown@bouncehammer.jp", rcpt);
    // The right message id with a wrong tag: the last character changed.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).unwrap();
    let forged_rp = return_path.replace(&token, &forged);
    assert_ne!(forged_rp, return_path);
    let codes = smtp_send(s.inbound.addr(), "", &[&forged_rp], &dsn).await;
    assert_eq!(codes.last(), Some(&550), "refused at RCPT: {codes:?}");
    // Never an open relay: any other domain or address is refused.
    for other in [
        "someone@example.org",
        "postmaster@postline.test",
        &format!("b+{token}@elsewhere.test"),
    ] {
        let codes = smtp_send(
            s.inbound.addr(),
            "x@example.org",
            &[other],
            "Subject: x\n\nx",
        )
        .await;
        assert_eq!(codes.last(), Some(&550), "{other}: {codes:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let email = wait_for(&s.app, &s.key, &id, |_| true).await;
    assert_eq!(email["status"], "delivered");
    assert_eq!(recipient(&email, rcpt)["status"], "delivered");
    assert!(suppressions(&s.app).is_empty());
    s.inbound.stop().await;
}

#[tokio::test]
async fn the_inbound_listener_bounds_message_size_and_line_length() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |s| {
        settings(s);
        s.inbound.max_message_bytes = 64 * 1024;
    })
    .await;
    let inbound = postline::bounces::inbound::start(&app.state.settings, app.state.pool.clone())
        .await
        .unwrap()
        .unwrap();
    let rp = format!("postmaster@{BOUNCE_DOMAIN}");
    // At the bound: accepted; one byte over: 552, and the session stays usable.
    let line = "a".repeat(998);
    let fits = format!(
        "Subject: x\n\n{}",
        (0..60)
            .map(|_| line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(fits.len() < 64 * 1024);
    assert_eq!(
        smtp_send(inbound.addr(), "", &[&rp], &fits).await.last(),
        Some(&250)
    );
    let big = format!(
        "Subject: x\n\n{}",
        (0..70)
            .map(|_| line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        smtp_send(inbound.addr(), "", &[&rp], &big).await.last(),
        Some(&552)
    );
    // A command line over 512 octets: 500, and the connection is still served.
    let stream = tokio::net::TcpStream::connect(inbound.addr())
        .await
        .unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut l = String::new();
    r.read_line(&mut l).await.unwrap();
    w.write_all(format!("HELO {}\r\nNOOP\r\n", "h".repeat(600)).as_bytes())
        .await
        .unwrap();
    l.clear();
    r.read_line(&mut l).await.unwrap();
    assert!(l.starts_with("500"), "{l}");
    l.clear();
    r.read_line(&mut l).await.unwrap();
    assert!(l.starts_with("250"), "{l}");
    inbound.stop().await;
}

#[tokio::test]
async fn suppression_api_crud_expiry_isolation_and_recipient_filter() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), settings).await;
    let a = app.create_tenant(json!({"name": "A"})).await;
    let b = app.create_tenant(json!({"name": "B"})).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let ka = app.tenant_key(a_id, PERMS).await;
    let kb = app.tenant_key(b_id, PERMS).await;
    let send_only = app.tenant_key(a_id, &["send"]).await;

    let r = app
        .post(
            "/v1/suppressions",
            &ka,
            json!({"email": "X@Example.org", "reason": "manual"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["email"], "x@example.org");
    assert_eq!(r.json["reason"], "manual");
    assert_eq!(r.json["expires_at"], Value::Null);
    assert_eq!(
        app.post("/v1/suppressions", &ka, json!({"email": "x@example.org"}))
            .await
            .status,
        409
    );
    assert_eq!(
        app.post("/v1/suppressions", &ka, json!({"email": "not-an-address"}))
            .await
            .status,
        422
    );
    assert_eq!(
        app.post(
            "/v1/suppressions",
            &ka,
            json!({"email": "y@example.org", "reason": "complaint"})
        )
        .await
        .status,
        422
    );
    assert_eq!(
        app.post(
            "/v1/suppressions",
            &ka,
            json!({"email": "y@example.org", "extra": 1})
        )
        .await
        .status,
        422
    );
    assert_eq!(app.get("/v1/suppressions", &send_only).await.status, 403);
    let list = app.get("/v1/suppressions?reason=manual", &ka).await;
    assert_eq!(
        list.json["data"].as_array().unwrap().len(),
        1,
        "{}",
        list.text
    );
    assert_eq!(app.get("/v1/suppressions?limit=101", &ka).await.status, 422);

    // Isolation: B sees nothing of A's list and its mail to x is delivered.
    assert_eq!(
        app.get("/v1/suppressions/x@example.org", &kb).await.status,
        404
    );
    assert_eq!(
        app.delete("/v1/suppressions/x@example.org", &kb)
            .await
            .status,
        404
    );
    assert!(app.get("/v1/suppressions", &kb).await.json["data"]
        .as_array()
        .unwrap()
        .is_empty());
    let to_b = send(&app, &kb, json!("x@example.org")).await;
    wait_for(&app, &kb, &to_b, |e| e["status"] == "delivered").await;
    let to_a = send(&app, &ka, json!(["x@example.org", "other@example.org"])).await;
    let e = wait_for(&app, &ka, &to_a, |e| e["status"] == "delivered").await;
    assert_eq!(recipient(&e, "x@example.org")["status"], "suppressed");
    assert_eq!(recipient(&e, "other@example.org")["status"], "delivered");
    assert!(
        sink.messages()
            .iter()
            .filter(|m| m.rcpt_to.contains(&"x@example.org".to_string()))
            .count()
            == 1
    );

    // GET /v1/emails?recipient= (exact, case-insensitive), per tenant.
    let found = app.get("/v1/emails?recipient=X@example.ORG", &ka).await;
    assert_eq!(found.status, 200, "{}", found.text);
    let ids: Vec<&str> = found.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![to_a.as_str()]);
    assert_eq!(
        app.get("/v1/emails?recipient=nobody", &ka).await.status,
        422
    );

    // Admin form and deletion.
    let admin = app
        .get(&format!("/v1/tenants/{a_id}/suppressions"), &app.admin_key)
        .await;
    assert_eq!(admin.status, 200, "{}", admin.text);
    assert_eq!(
        app.delete("/v1/suppressions/x@example.org", &ka)
            .await
            .status,
        204
    );
    assert_eq!(
        app.get("/v1/suppressions/x@example.org", &ka).await.status,
        404
    );

    // Expiry: a hard bounce past its expires_at counts as absent.
    diesel::sql_query(format!(
        "INSERT INTO suppressions (tenant_id, email, reason, expires_at) VALUES \
         ('{a_id}', 'old@example.org', 'hard_bounce', now() - interval '1 second'), \
         ('{a_id}', 'fresh@example.org', 'hard_bounce', now() + interval '1 day')"
    ))
    .execute(&mut app.sql_conn())
    .unwrap();
    assert_eq!(
        app.get("/v1/suppressions/old@example.org", &ka)
            .await
            .status,
        404
    );
    assert_eq!(
        app.get("/v1/suppressions/fresh@example.org", &ka)
            .await
            .status,
        200
    );
    let old = send(&app, &ka, json!("old@example.org")).await;
    wait_for(&app, &ka, &old, |e| e["status"] == "delivered").await;
    let fresh = send(&app, &ka, json!("fresh@example.org")).await;
    wait_for(&app, &ka, &fresh, |e| e["status"] == "suppressed").await;
    // Manual add over an expired entry works (it is as good as absent).
    let r = app
        .post("/v1/suppressions", &ka, json!({"email": "old@example.org"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let usage = app
        .get(&format!("/v1/tenants/{a_id}/usage"), &app.admin_key)
        .await;
    assert_eq!(usage.json["emails_suppressed"], 2, "{}", usage.text);
}
