//! A report concerns only the recipient its token names (issue 22, finding
//! 2), end to end: the worker against the SMTP sink, reports over SMTP to
//! the real inbound listener, Postgres. Each recipient's copy goes in its own
//! transaction with its own return path and `X-Postline-ID`, under one DKIM
//! signature; a complaint or DSN built from one copy cannot reach another
//! recipient, whatever address it names; a replayed report does not undo a
//! tenant's removal of a suppression; a tampered token is ignored; tokens of
//! the earlier message-only form count only for single-recipient messages.

use data_encoding::BASE32_DNSSEC;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::bounces::{
    corpus, recipient, send, sent_to, smtp_send, suppressions, wait_for, BOUNCE_DOMAIN, FBL,
};
use crate::common::dns_server::DnsServer;
use crate::common::smtp_sink::SmtpSink;
use crate::common::TestApp;
use crate::domains_dkim::{mail_auth_results, verifier};

const PERMS: &[&str] = &[
    "send",
    "emails:read",
    "suppressions:read",
    "suppressions:write",
    "domains:read",
    "domains:write",
];

struct Setup {
    app: TestApp,
    sink: SmtpSink,
    inbound: postline::smtp_server::Server,
    tenant: String,
    key: String,
    dns: DnsServer,
}

async fn setup() -> Setup {
    let dns = DnsServer::start().await;
    let sink = SmtpSink::start().await;
    let ns = dns.nameserver();
    let app = TestApp::spawn_serving(sink.port(), move |s| {
        crate::bounces::settings(s);
        s.dns.nameservers = vec![ns];
    })
    .await;
    let inbound = postline::bounces::inbound::start(&app.state.settings, app.state.pool.clone())
        .await
        .unwrap()
        .expect("inbound.bind is set in tests");
    let t = app.create_tenant(json!({"name": "Acme"})).await;
    let tenant = t["id"].as_str().unwrap().to_string();
    let key = app.tenant_key(&tenant, PERMS).await;
    Setup {
        app,
        sink,
        inbound,
        tenant,
        key,
        dns,
    }
}

/// Sends to `to` and waits until it is delivered.
async fn delivered(s: &Setup, to: &[&str]) -> String {
    let id = send(&s.app, &s.key, json!(to)).await;
    wait_for(&s.app, &s.key, &id, |e| e["status"] == "delivered").await;
    id
}

/// An ARF complaint quoting the copy that carried `token`, naming `named`
/// as the complaining recipient (the original `To:` and `Original-Rcpt-To`).
fn complaint(token: &str, named: &str) -> String {
    corpus("arf-01.eml")
        .replace(
            "Version: 1.0\n",
            &format!("Version: 1.0\nOriginal-Rcpt-To: {named}\n"),
        )
        .replace("To: redacted@example.net", &format!("To: {named}"))
        .replace(
            "Return-Path: <support@example.ed.jp>",
            &format!("X-Postline-ID: {token}\nReturn-Path: <support@example.ed.jp>"),
        )
}

/// A DSN saying `named` failed hard (5.1.1).
fn dsn(named: &str) -> String {
    corpus("rfc3464-01.eml").replace("userunknown@bouncehammer.jp", named)
}

async fn report_to(s: &Setup, rcpt: &str, text: &str) {
    let codes = smtp_send(s.inbound.addr(), "", &[rcpt], text).await;
    assert_eq!(codes.last(), Some(&250), "{codes:?}");
}

async fn complain(s: &Setup, text: &str) {
    let codes = smtp_send(s.inbound.addr(), "fbl@provider.example", &[FBL], text).await;
    assert_eq!(codes.last(), Some(&250), "{codes:?}");
}

async fn email(s: &Setup, id: &str) -> Value {
    wait_for(&s.app, &s.key, id, |_| true).await
}

fn status(email: &Value, rcpt: &str) -> String {
    recipient(email, rcpt)["status"]
        .as_str()
        .unwrap()
        .to_string()
}

fn suppressed(s: &Setup) -> Vec<String> {
    suppressions(&s.app).into_iter().map(|(e, _)| e).collect()
}

#[tokio::test]
async fn each_recipient_gets_its_own_return_path_and_the_same_valid_dkim_signature() {
    let s = setup().await;
    let domain = crate::domains::verified_domain(
        &s.app,
        &s.dns,
        &s.key,
        json!({"name": "acme.test", "dkim": {"algorithms": ["rsa-sha256", "ed25519-sha256"]}}),
    )
    .await;
    assert_eq!(domain["dkim"].as_array().unwrap().len(), 2);
    delivered(&s, &["a@example.org", "b@example.org"]).await;
    let got = s.sink.wait_for(2, crate::bounces::WAIT).await;
    assert_eq!(got.len(), 2, "one transaction per recipient");
    let (rp_a, token_a) = sent_to(&s.sink, "a@example.org").await;
    let (rp_b, token_b) = sent_to(&s.sink, "b@example.org").await;
    assert_ne!(rp_a, rp_b);
    assert_eq!(rp_a, format!("b+{token_a}@{BOUNCE_DOMAIN}"));
    assert_eq!(rp_b, format!("b+{token_b}@{BOUNCE_DOMAIN}"));
    assert!(got.iter().all(|m| m.rcpt_to.len() == 1));
    assert_eq!(got[0].connection_id, got[1].connection_id, "one connection");
    // The copies differ only in their first line, the X-Postline-ID.
    let after_id = |m: &crate::common::smtp_sink::ReceivedMessage| {
        let text = m.text();
        assert!(text.starts_with("X-Postline-ID: "), "{text}");
        text.split_once("\r\n").unwrap().1.to_string()
    };
    assert_eq!(after_id(&got[0]), after_id(&got[1]), "one signed content");
    assert!(after_id(&got[0]).starts_with("DKIM-Signature:"));
    let v = verifier(&s.dns);
    for m in &got {
        let results = mail_auth_results(&v, &m.data).await;
        assert_eq!(results.len(), 2, "{results:?}");
        assert!(results.iter().all(|r| r.2), "DKIM fails: {results:?}");
    }
    s.inbound.stop().await;
}

#[tokio::test]
async fn a_report_from_one_copy_naming_another_recipient_reaches_only_the_copys_recipient() {
    let s = setup().await;
    let (a, b) = ("a@example.org", "b@example.org");
    let id = delivered(&s, &[a, b]).await;
    let (_, token_a) = sent_to(&s.sink, a).await;
    complain(&s, &complaint(&token_a, b)).await;
    let e = wait_for(&s.app, &s.key, &id, |e| status(e, a) == "complained").await;
    assert_eq!(status(&e, b), "delivered");
    assert_eq!(suppressed(&s), vec![a.to_string()]);

    // A DSN at c's return path naming d: c's copy failed, not d.
    let (c, d) = ("c@example.org", "d@example.org");
    let id = delivered(&s, &[c, d]).await;
    let (rp_c, _) = sent_to(&s.sink, c).await;
    report_to(&s, &rp_c, &dsn(d)).await;
    let e = wait_for(&s.app, &s.key, &id, |e| status(e, c) == "bounced").await;
    assert_eq!(status(&e, d), "delivered");
    assert_eq!(suppressed(&s), vec![a.to_string(), c.to_string()]);
    s.inbound.stop().await;
}

#[tokio::test]
async fn a_replayed_report_never_re_suppresses_what_the_tenant_removed() {
    let s = setup().await;
    let (a, b) = ("a@example.org", "b@example.org");
    let id = delivered(&s, &[a, b]).await;
    let (_, token_a) = sent_to(&s.sink, a).await;
    let (rp_b, _) = sent_to(&s.sink, b).await;
    let arf = complaint(&token_a, a);
    complain(&s, &arf).await;
    report_to(&s, &rp_b, &dsn(b)).await;
    wait_for(&s.app, &s.key, &id, |e| {
        status(e, a) == "complained" && status(e, b) == "bounced"
    })
    .await;
    assert_eq!(suppressed(&s), vec![a.to_string(), b.to_string()]);
    for addr in [a, b] {
        let r = s
            .app
            .delete(&format!("/v1/suppressions/{addr}"), &s.key)
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
    }
    // The same reports again, and a second, different bounce report for b:
    // nothing comes back.
    complain(&s, &arf).await;
    report_to(&s, &rp_b, &dsn(b)).await;
    report_to(&s, &rp_b, &dsn(b).replace("Status: 5.1.1", "Status: 5.1.2")).await;
    assert!(suppressed(&s).is_empty(), "{:?}", suppressions(&s.app));
    let e = email(&s, &id).await;
    let events = |kind: &str| {
        e["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["type"] == kind)
            .count()
    };
    assert_eq!(
        (events("email.complained"), events("email.bounced")),
        (1, 1)
    );
    let usage = s
        .app
        .get(&format!("/v1/tenants/{}/usage", s.tenant), &s.app.admin_key)
        .await;
    assert_eq!(usage.json["emails_complained"], 1, "{}", usage.text);
    s.inbound.stop().await;
}

#[tokio::test]
async fn a_tampered_token_is_ignored() {
    let s = setup().await;
    let (a, b) = ("a@example.org", "b@example.org");
    let id = delivered(&s, &[a, b]).await;
    let (_, token_a) = sent_to(&s.sink, a).await;
    let (_, token_b) = sent_to(&s.sink, b).await;
    // a's token rewritten to name b's index (its tag left as it was), and
    // a's token with one tag bit flipped.
    let mut raw = BASE32_DNSSEC.decode(token_a.as_bytes()).unwrap();
    let index_b = BASE32_DNSSEC.decode(token_b.as_bytes()).unwrap()[32];
    raw[32] = index_b;
    let renamed = BASE32_DNSSEC.encode(&raw);
    let mut raw = BASE32_DNSSEC.decode(token_a.as_bytes()).unwrap();
    raw[35] ^= 1;
    let flipped = BASE32_DNSSEC.encode(&raw);
    for forged in [&renamed, &flipped] {
        // A return path whose token does not verify is refused at RCPT; the
        // complaint reaches the FBL address and its token is ignored.
        let rcpt = format!("b+{forged}@{BOUNCE_DOMAIN}");
        let codes = smtp_send(s.inbound.addr(), "", &[&rcpt], &dsn(b)).await;
        assert!(codes.contains(&550), "{codes:?}");
        complain(&s, &complaint(forged, b)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let e = email(&s, &id).await;
    assert_eq!(
        (status(&e, a), status(&e, b)),
        ("delivered".into(), "delivered".into())
    );
    assert!(suppressed(&s).is_empty());
    s.inbound.stop().await;
}

/// The return path of the earlier release: tenant, message and a 48-bit
/// tag under a key derived from the master key with `postline/verp/v1`.
fn message_only_token(app: &TestApp, tenant: &str, email: &str) -> String {
    let master = app.state.settings.master_key().unwrap();
    let mut derive = <Hmac<Sha256> as KeyInit>::new_from_slice(&master[..]).unwrap();
    derive.update(b"postline/verp/v1");
    let key = derive.finalize().into_bytes();
    let mut raw = Vec::new();
    raw.extend_from_slice(uuid::Uuid::parse_str(tenant).unwrap().as_bytes());
    raw.extend_from_slice(uuid::Uuid::parse_str(email).unwrap().as_bytes());
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(&raw);
    raw.extend_from_slice(&mac.finalize().into_bytes()[..6]);
    BASE32_DNSSEC.encode(&raw)
}

#[tokio::test]
async fn message_only_tokens_count_for_single_recipient_messages_only() {
    let s = setup().await;
    let single = delivered(&s, &["solo@example.org"]).await;
    let token = message_only_token(&s.app, &s.tenant, &single);
    report_to(
        &s,
        &format!("b+{token}@{BOUNCE_DOMAIN}"),
        &dsn("solo@example.org"),
    )
    .await;
    wait_for(&s.app, &s.key, &single, |e| e["status"] == "bounced").await;
    assert_eq!(suppressed(&s), vec!["solo@example.org".to_string()]);

    let (x, y) = ("x@example.org", "y@example.org");
    let both = delivered(&s, &[x, y]).await;
    let token = message_only_token(&s.app, &s.tenant, &both);
    report_to(&s, &format!("b+{token}@{BOUNCE_DOMAIN}"), &dsn(x)).await;
    complain(&s, &complaint(&token, y)).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let e = email(&s, &both).await;
    assert_eq!(
        (status(&e, x), status(&e, y)),
        ("delivered".into(), "delivered".into())
    );
    assert_eq!(suppressed(&s), vec!["solo@example.org".to_string()]);
    s.inbound.stop().await;
}
