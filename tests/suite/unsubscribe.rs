//! RFC 8058 one-click unsubscribe (issue 26) end to end: a broadcast message
//! reaches the sink with `List-Unsubscribe` and `List-Unsubscribe-Post`
//! covered by a DKIM signature dkimpy verifies; a GET of the link changes
//! nothing; the one-click POST as Gmail sends it suppresses the recipient for
//! broadcast mail only (the next broadcast is `suppressed`, a transactional
//! message is delivered); a forged token is 404; the `mailto:` form works
//! over SMTP through the inbound listener.

use std::time::Duration;

use serde_json::{json, Value};

use crate::bounces::{smtp_send, wait_for, BOUNCE_DOMAIN};
use crate::common::dns_server::DnsServer;
use crate::common::smtp_sink::SmtpSink;
use crate::common::TestApp;
use crate::domains::{dkim_records, verified_domain};
use crate::domains_dkim::dkimpy;

const PUBLIC: &str = "https://mail.postline.test";

async fn serving(dns: &DnsServer, sink: &SmtpSink) -> TestApp {
    let ns = dns.nameserver();
    TestApp::spawn_serving(sink.port(), move |s| {
        crate::bounces::settings(s);
        s.dns.nameservers = vec![ns];
        s.domains.require_verified = true;
        s.domains.cache_secs = 1;
        s.unsubscribe.public_url = PUBLIC.into();
    })
    .await
}

fn mail(to: &str, stream: &str) -> Value {
    json!({"from": "News <news@acme.test>", "to": to, "subject": "Our news",
           "text": "Hello.\r\n", "stream": stream})
}

/// The unfolded value of a header of `raw`.
fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next()?;
    let mut out: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(v) = out.as_mut().filter(|_| line.starts_with([' ', '\t'])) {
            v.push_str(line);
            continue;
        }
        if out.is_some() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            if n.eq_ignore_ascii_case(name) {
                out = Some(v.trim().to_string());
            }
        }
    }
    out
}

async fn delivered_to(sink: &SmtpSink, rcpt: &str, n: usize) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got: Vec<_> = sink
            .messages()
            .into_iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r == rcpt))
            .collect();
        if got.len() >= n {
            return got[n - 1].text();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing sent to {rcpt}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn link_token(list_unsubscribe: &str) -> (String, String) {
    let url = list_unsubscribe
        .split(['<', '>'])
        .find(|p| p.starts_with(PUBLIC))
        .expect("the https link")
        .to_string();
    let mailto = list_unsubscribe
        .split(['<', '>'])
        .find(|p| p.starts_with("mailto:"))
        .expect("the mailto link")
        .trim_start_matches("mailto:")
        .to_string();
    (url, mailto)
}

fn stream_of(app: &TestApp, email: &str) -> Vec<(String, Option<String>)> {
    use diesel::prelude::*;
    use postline::db::schema::suppressions::dsl as s;
    s::suppressions
        .filter(s::email.eq(email))
        .select((s::reason, s::stream))
        .load(&mut app.sql_conn())
        .unwrap()
}

#[tokio::test]
async fn broadcast_mail_carries_signed_one_click_headers_and_the_post_suppresses_broadcast_only() {
    let dns = DnsServer::start().await;
    let sink = SmtpSink::start().await;
    let app = serving(&dns, &sink).await;
    let (tid, key) = crate::domains::tenant(&app).await;
    let reader = app
        .tenant_key(&tid, &["emails:read", "suppressions:read", "usage:read"])
        .await;
    let d = verified_domain(&app, &dns, &key, json!({"name": "acme.test"})).await;

    let r = app
        .post("/v1/emails", &key, mail("ann@example.org", "broadcast"))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    let raw = delivered_to(&sink, "ann@example.org", 1).await;
    let lu = header(&raw, "List-Unsubscribe").expect("List-Unsubscribe");
    assert_eq!(
        header(&raw, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let sig = header(&raw, "DKIM-Signature")
        .expect("signed")
        .to_ascii_lowercase();
    let h = sig
        .split(';')
        .find_map(|p| p.trim().strip_prefix("h="))
        .expect("h= tag")
        .replace([' ', '\t', '\r', '\n'], "");
    let signed: Vec<&str> = h.split(':').collect();
    assert!(signed.contains(&"list-unsubscribe"), "{h}");
    assert!(signed.contains(&"list-unsubscribe-post"), "{h}");
    assert_eq!(dkimpy(raw.as_bytes(), &dkim_records(&d)), vec![true]);
    // A changed link fails the signature. The link's whole prefix is
    // replaced: a bare "/u/" can occur in the base64 of `b=` or `bh=`.
    let forged_raw = raw.replacen(&format!("{PUBLIC}/u/"), &format!("{PUBLIC}/u/x"), 1);
    assert_ne!(forged_raw, raw);
    assert_eq!(
        dkimpy(forged_raw.as_bytes(), &dkim_records(&d)),
        vec![false]
    );
    let m = app.get(&format!("/v1/emails/{id}"), &key).await;
    assert_eq!(m.json["stream"], "broadcast");

    let (url, mailto) = link_token(&lu);
    assert!(mailto.ends_with(&format!("@{BOUNCE_DOMAIN}")), "{mailto}");
    let path = url.trim_start_matches(PUBLIC).to_string();
    assert!(path.starts_with("/u/"));
    let http = reqwest::Client::new();
    // GET: a page whose button posts; nothing changes.
    let page = http
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("<form method=\"post\""), "{body}");
    assert!(body.contains("<html lang=\"en\""));
    assert!(
        stream_of(&app, "ann@example.org").is_empty(),
        "a GET unsubscribes nobody"
    );
    // Forged: 404, GET or POST.
    let forged = format!("{}/u/{}", app.address, "a".repeat(60));
    assert_eq!(http.get(&forged).send().await.unwrap().status(), 404);
    assert_eq!(
        http.post(&forged)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The POST as Gmail sends it.
    let r = http
        .post(format!("{}{path}", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        stream_of(&app, "ann@example.org"),
        vec![("unsubscribe".to_string(), Some("broadcast".to_string()))]
    );
    let s = app.get("/v1/suppressions/ann@example.org", &reader).await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(s.json["reason"], "unsubscribe");
    assert_eq!(s.json["stream"], "broadcast");
    // Again: still 200, one entry.
    let again = http
        .post(format!("{}{path}", app.address))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);

    // The next broadcast is suppressed; a transactional message goes.
    let b = app
        .post("/v1/emails", &key, mail("ann@example.org", "broadcast"))
        .await;
    assert_eq!(b.status, 202, "{}", b.text);
    let bid = b.json["id"].as_str().unwrap();
    wait_for(&app, &key, bid, |m| m["status"] == "suppressed").await;
    let tx = app
        .post("/v1/emails", &key, mail("ann@example.org", "transactional"))
        .await;
    assert_eq!(tx.status, 202, "{}", tx.text);
    let tid = tx.json["id"].as_str().unwrap();
    wait_for(&app, &key, tid, |m| m["status"] == "delivered").await;
    let second = delivered_to(&sink, "ann@example.org", 2).await;
    assert!(
        header(&second, "List-Unsubscribe").is_none(),
        "transactional mail has no link"
    );
    let usage = app.get("/v1/usage", &reader).await;
    assert_eq!(usage.json["emails_unsubscribed"], 1, "{}", usage.text);
    // The stream filter of the message list.
    let l = app.get("/v1/emails?stream=broadcast", &key).await;
    assert_eq!(l.json["data"].as_array().unwrap().len(), 2, "{}", l.text);
    assert!(l.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["stream"] == "broadcast"));
}

#[tokio::test]
async fn the_mailto_form_unsubscribes_over_smtp_and_a_tenant_list_unsubscribe_is_kept() {
    let dns = DnsServer::start().await;
    let sink = SmtpSink::start().await;
    let app = serving(&dns, &sink).await;
    let inbound = postline::bounces::inbound::start(&app.state.settings, app.state.pool.clone())
        .await
        .unwrap()
        .expect("inbound.bind is set in tests");
    let (_, key) = crate::domains::tenant(&app).await;
    verified_domain(&app, &dns, &key, json!({"name": "acme.test"})).await;

    // A transactional message asking for the headers gets them too.
    let mut body = mail("bob@example.org", "transactional");
    body["unsubscribe"] = json!(true);
    assert_eq!(app.post("/v1/emails", &key, body).await.status, 202);
    let raw = delivered_to(&sink, "bob@example.org", 1).await;
    let (_, mailto) = link_token(&header(&raw, "List-Unsubscribe").expect("asked for"));
    // A forged mailto token: 550 at RCPT.
    let forged = format!("u+{}@{BOUNCE_DOMAIN}", "a".repeat(60));
    let codes = smtp_send(
        inbound.addr(),
        "bob@example.org",
        &[&forged],
        "Subject: x\r\n\r\nx",
    )
    .await;
    assert_eq!(codes[3], 550, "{codes:?}");
    let codes = smtp_send(
        inbound.addr(),
        "bob@example.org",
        &[&mailto],
        "From: bob@example.org\r\nSubject: unsubscribe\r\n\r\nunsubscribe\r\n",
    )
    .await;
    assert_eq!(codes[3..], [250, 354, 250], "{codes:?}");
    // An unsubscribe stops broadcast mail, whatever message carried it.
    assert_eq!(
        stream_of(&app, "bob@example.org"),
        vec![("unsubscribe".to_string(), Some("broadcast".to_string()))]
    );

    // A tenant's own List-Unsubscribe is kept instead.
    let mut own = mail("carol@example.org", "broadcast");
    own["headers"] = json!({"List-Unsubscribe": "<https://acme.test/out>"});
    let r = app.post("/v1/emails", &key, own).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let raw = delivered_to(&sink, "carol@example.org", 1).await;
    assert_eq!(
        header(&raw, "List-Unsubscribe").as_deref(),
        Some("<https://acme.test/out>")
    );
    assert!(header(&raw, "List-Unsubscribe-Post").is_none());
    inbound.stop().await;
}
