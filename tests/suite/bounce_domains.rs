//! Bounce domains per sending domain (API.md "Bounces"), against the
//! loopback DNS server, the SMTP sink and the real inbound listener: a
//! domain's `return_path` record (CNAME `pl-bounces.<domain>` → the bounce
//! domain) that checks `ok` becomes the return path of its mail, and the
//! listener accepts DSNs for that name; a name whose record does not check
//! `ok` gets 550.

use std::time::Duration;

use serde_json::{json, Value};

use crate::bounces::{
    corpus, recipient, send, sent_to, settings, smtp_send, suppressions, wait_for, BOUNCE_DOMAIN,
    PERMS,
};
use crate::common::dns_server::DnsServer;
use crate::common::smtp_sink::SmtpSink;
use crate::common::TestApp;

/// Past `domains.cache_secs` (1 in config/test.toml): cached answers expired.
const CACHE: Duration = Duration::from_millis(1500);

async fn tenant(app: &TestApp) -> String {
    let t = app.create_tenant(json!({"name": "T"})).await;
    let mut perms = PERMS.to_vec();
    perms.extend(["domains:read", "domains:write"]);
    app.tenant_key(t["id"].as_str().unwrap(), &perms).await
}

fn return_path_record(d: &Value) -> Value {
    d["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["purpose"] == "return_path")
        .cloned()
        .unwrap_or_else(|| panic!("no return_path record in {d}"))
}

async fn verify(app: &TestApp, key: &str, name: &str) -> Value {
    let v = app
        .post(&format!("/v1/domains/{name}/verify"), key, json!({}))
        .await;
    assert_eq!(v.status, 200, "{}", v.text);
    return_path_record(&v.json)
}

#[tokio::test]
async fn a_verified_return_path_record_is_the_bounce_domain_of_its_sending_domain() {
    let dns = DnsServer::start().await;
    let sink = SmtpSink::start().await;
    let ns = dns.nameserver();
    let app = TestApp::spawn_serving(sink.port(), move |s| {
        settings(s);
        s.dns.nameservers = vec![ns];
    })
    .await;
    let inbound = postline::bounces::inbound::start(&app.state.settings, app.state.pool.clone())
        .await
        .unwrap()
        .unwrap();
    let key = tenant(&app).await;
    let created = app
        .post("/v1/domains", &key, json!({"name": "acme.test"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let rec = return_path_record(&created.json);
    assert_eq!(rec["type"], "CNAME");
    assert_eq!(rec["name"], "pl-bounces.acme.test");
    assert_eq!(rec["value"], BOUNCE_DOMAIN);
    assert_eq!(rec["required"], false);
    assert_eq!(rec["status"], "missing");

    // Not published yet: the return path is at bounces.domain, and the
    // listener refuses the domain's name.
    let first = send(&app, &key, json!("first@example.org")).await;
    wait_for(&app, &key, &first, |e| e["status"] == "delivered").await;
    let (rp, token) = sent_to(&sink, "first@example.org").await;
    assert!(rp.ends_with(&format!("@{BOUNCE_DOMAIN}")), "{rp}");
    let own = format!("b+{token}@pl-bounces.acme.test");
    let refused = smtp_send(inbound.addr(), "", &[&own], "Subject: x\n\nx").await;
    assert_eq!(refused.last(), Some(&550), "{refused:?}");

    // A CNAME to somewhere else is a mismatch, and still not used.
    dns.add_cname("pl-bounces.acme.test", "bounces.elsewhere.test");
    assert_eq!(verify(&app, &key, "acme.test").await["status"], "mismatch");
    dns.remove("pl-bounces.acme.test");
    dns.add_cname("pl-bounces.acme.test", BOUNCE_DOMAIN);
    assert_eq!(verify(&app, &key, "acme.test").await["status"], "ok");
    tokio::time::sleep(CACHE).await;

    // Verified: mail from the domain goes out with a return path at its name,
    // and a DSN to it is accepted and recorded.
    let rcpt = "kim@example.org";
    let id = send(&app, &key, json!(rcpt)).await;
    wait_for(&app, &key, &id, |e| e["status"] == "delivered").await;
    let (rp, _) = sent_to(&sink, rcpt).await;
    assert!(
        rp.starts_with("b+") && rp.ends_with("@pl-bounces.acme.test"),
        "{rp}"
    );
    let dsn = corpus("rfc3464-01.eml").replace("userunknown@bouncehammer.jp", rcpt);
    let codes = smtp_send(inbound.addr(), "", &[&rp], &dsn).await;
    assert_eq!(codes.last(), Some(&250), "{codes:?}");
    let email = wait_for(&app, &key, &id, |e| e["status"] == "bounced").await;
    assert_eq!(recipient(&email, rcpt)["bounce"]["status"], "5.1.1");
    assert_eq!(
        suppressions(&app),
        vec![(rcpt.to_string(), "hard_bounce".into())]
    );

    // Another tenant's domain whose record is not published: its name is
    // refused, even with a valid token of ours; so is a name nobody holds.
    let other = tenant(&app).await;
    let r = app
        .post("/v1/domains", &other, json!({"name": "other.test"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        verify(&app, &other, "other.test").await["status"],
        "missing"
    );
    let token = rp.split('@').next().unwrap();
    for name in ["pl-bounces.other.test", "pl-bounces.nobody.test"] {
        let codes = smtp_send(inbound.addr(), "", &[&format!("{token}@{name}")], &dsn).await;
        assert_eq!(codes.last(), Some(&550), "{name}: {codes:?}");
    }

    // The record removed: after the next check (and the cache), the name is
    // refused again and mail goes back to bounces.domain.
    dns.remove("pl-bounces.acme.test");
    assert_eq!(verify(&app, &key, "acme.test").await["status"], "missing");
    tokio::time::sleep(CACHE).await;
    let codes = smtp_send(inbound.addr(), "", &[&rp], &dsn).await;
    assert_eq!(codes.last(), Some(&550), "{codes:?}");
    let last = send(&app, &key, json!("last@example.org")).await;
    wait_for(&app, &key, &last, |e| e["status"] == "delivered").await;
    let (rp, _) = sent_to(&sink, "last@example.org").await;
    assert!(rp.ends_with(&format!("@{BOUNCE_DOMAIN}")), "{rp}");
    inbound.stop().await;
}
