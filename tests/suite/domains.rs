//! Sending domains against a real DNS server on loopback: verification
//! (pending → verified, mismatch), ownership across tenants, the sending
//! rule with `domains.require_verified = true`, and the periodic recheck
//! with its grace period and webhooks. DKIM signing is in `domains_dkim`.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use postline::config::Settings;
use serde_json::{json, Value};

use crate::common::dns_server::DnsServer;
use crate::common::webhook_receiver::Receiver;
use crate::common::TestApp;

pub const PERMS: &[&str] = &[
    "send",
    "emails:read",
    "domains:read",
    "domains:write",
    "webhooks:write",
];

/// An app resolving through `dns`, with the production sending rule.
pub async fn app_on(dns: &DnsServer, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let ns = dns.nameserver();
    TestApp::spawn_with(move |s| {
        s.dns.nameservers = vec![ns];
        s.domains.require_verified = true;
        tweak(s);
    })
    .await
}

pub async fn tenant(app: &TestApp) -> (String, String) {
    let t = app.create_tenant(json!({"name": "T"})).await;
    let id = t["id"].as_str().unwrap().to_string();
    let key = app.tenant_key(&id, PERMS).await;
    (id, key)
}

/// The DKIM records of a domain view: `(name, value)`.
pub fn dkim_records(d: &Value) -> Vec<(String, String)> {
    d["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["purpose"] == "dkim")
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["value"].as_str().unwrap().into(),
            )
        })
        .collect()
}

pub fn publish_all(dns: &DnsServer, d: &Value) {
    for (name, value) in dkim_records(d) {
        dns.remove(&name);
        dns.add_txt(&name, &value);
    }
}

fn dkim_status(d: &Value) -> Vec<String> {
    d["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["purpose"] == "dkim")
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect()
}

/// Creates, publishes and verifies `name` for the tenant of `key`.
pub async fn verified_domain(
    app: &crate::common::Api,
    dns: &DnsServer,
    key: &str,
    body: Value,
) -> Value {
    let r = app.post("/v1/domains", key, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    publish_all(dns, &r.json);
    let name = r.json["name"].as_str().unwrap().to_string();
    let v = app
        .post(&format!("/v1/domains/{name}/verify"), key, json!({}))
        .await;
    assert_eq!(v.status, 200, "{}", v.text);
    assert_eq!(v.json["status"], "verified", "{}", v.text);
    v.json
}

fn send(from: &str) -> Value {
    json!({"from": from, "to": "rcpt@example.org", "subject": "s", "text": "t"})
}

fn queued(app: &TestApp) -> i64 {
    use diesel::dsl::count_star;
    postline::db::schema::emails::table
        .select(count_star())
        .first(&mut app.sql_conn())
        .unwrap()
}

#[tokio::test]
async fn a_domain_is_pending_until_its_dkim_record_resolves_as_given() {
    let dns = DnsServer::start().await;
    let app = app_on(&dns, |_| {}).await;
    let (_, key) = tenant(&app).await;
    let r = app
        .post("/v1/domains", &key, json!({"name": "Acme.Test"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let d = r.json;
    assert_eq!(d["name"], "acme.test");
    assert_eq!(d["status"], "pending");
    assert_eq!(d["dkim"][0]["algorithm"], "rsa-sha256");
    assert_eq!(d["dkim"][0]["status"], "pending");
    let (name, value) = dkim_records(&d).remove(0);
    let selector = d["dkim"][0]["selector"].as_str().unwrap();
    assert_eq!(name, format!("{selector}._domainkey.acme.test"));
    assert!(value.starts_with("v=DKIM1; k=rsa; p=MII"), "{value}");
    assert!(!r.text.contains("PRIVATE"), "no private key in responses");

    let verify = || app.post("/v1/domains/acme.test/verify", &key, json!({}));
    let v = verify().await;
    assert_eq!(
        (v.json["status"].as_str(), dkim_status(&v.json)),
        (Some("pending"), vec!["missing".to_string()])
    );
    assert!(v.json["last_checked_at"].is_string());

    // A record with another key is a mismatch, not a verification.
    dns.add_txt(
        &name,
        "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwrong",
    );
    let v = verify().await;
    assert_eq!(
        (v.json["status"].as_str(), dkim_status(&v.json)),
        (Some("pending"), vec!["mismatch".to_string()])
    );

    dns.remove(&name);
    dns.add_txt(&name, &value); // > 255 bytes: published as several strings
    let v = verify().await;
    assert_eq!(v.json["status"], "verified", "{}", v.text);
    assert_eq!(dkim_status(&v.json), vec!["ok"]);
    assert_eq!(v.json["dkim"][0]["status"], "active");
    assert!(v.json["verified_at"].is_string());

    // Read back by id and by name; the admin form sees the same.
    let id = d["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/domains/{id}"), &key).await.json["status"],
        "verified"
    );
    let listed = app.get("/v1/domains", &key).await;
    assert_eq!(listed.json["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn another_tenant_cannot_verify_a_verified_name_or_a_subdomain_and_sees_nothing() {
    let dns = DnsServer::start().await;
    let app = app_on(&dns, |_| {}).await;
    let (_, a) = tenant(&app).await;
    let (b_id, b) = tenant(&app).await;
    // Both may hold the name while pending; only one verifies it.
    let b_domain = app
        .post("/v1/domains", &b, json!({"name": "acme.test"}))
        .await;
    assert_eq!(b_domain.status, 201);
    publish_all(&dns, &b_domain.json);
    let a_domain = verified_domain(&app, &dns, &a, json!({"name": "acme.test"})).await;

    let r = app
        .post("/v1/domains/acme.test/verify", &b, json!({}))
        .await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (409, Some("domain_taken")),
        "{}",
        r.text
    );
    assert_eq!(
        app.get("/v1/domains/acme.test", &b).await.json["status"],
        "pending"
    );
    for name in ["acme.test", "mail.acme.test", "a.b.acme.test"] {
        let (_, c) = tenant(&app).await;
        let r = app.post("/v1/domains", &c, json!({"name": name})).await;
        assert_eq!(
            (r.status, r.json["code"].as_str()),
            (409, Some("domain_taken")),
            "{name}: {}",
            r.text
        );
    }
    // B's rows stay B's; A's domain is a 404 to B, by id, in every route.
    let a_id = a_domain["id"].as_str().unwrap();
    for (m, path) in [
        ("GET", format!("/v1/domains/{a_id}")),
        ("DELETE", format!("/v1/domains/{a_id}")),
        ("POST", format!("/v1/domains/{a_id}/verify")),
        ("POST", format!("/v1/domains/{a_id}/dkim/rotate")),
        ("GET", format!("/v1/tenants/{b_id}/domains/{a_id}")),
    ] {
        let k = if path.starts_with("/v1/tenants") {
            app.admin_key.clone()
        } else {
            b.clone()
        };
        let body = (m == "POST").then(|| json!({}));
        let r = app.request(m, &path, Some(&k), body).await;
        assert_eq!(r.status, 404, "{m} {path}: {}", r.text);
    }
    // Neither B's pending name nor a subdomain of A's lets B send.
    for from in ["x@acme.test", "x@mail.acme.test"] {
        let r = app.post("/v1/emails", &b, send(from)).await;
        assert_eq!(
            (r.status, r.json["code"].as_str()),
            (422, Some("from_domain_not_allowed")),
            "{from}"
        );
    }
}

#[tokio::test]
async fn mail_from_an_unverified_or_foreign_domain_is_refused_and_nothing_is_queued() {
    let dns = DnsServer::start().await;
    let app = app_on(&dns, |_| {}).await;
    let (_, a) = tenant(&app).await;
    let (_, b) = tenant(&app).await;
    let refused = |r: crate::common::Resp| {
        assert_eq!(
            (r.status, r.json["code"].as_str()),
            (422, Some("from_domain_not_allowed")),
            "{}",
            r.text
        );
    };
    refused(app.post("/v1/emails", &a, send("a@nowhere.test")).await);
    assert_eq!(
        app.post("/v1/domains", &a, json!({"name": "acme.test"}))
            .await
            .status,
        201
    );
    refused(app.post("/v1/emails", &a, send("a@acme.test")).await);
    let batch = json!({"emails": [send("a@acme.test"), send("a@acme.test")]});
    refused(app.post("/v1/emails/batch", &a, batch).await);
    assert_eq!(queued(&app), 0);

    let d = app.get("/v1/domains/acme.test", &a).await.json;
    publish_all(&dns, &d);
    assert_eq!(
        app.post("/v1/domains/acme.test/verify", &a, json!({}))
            .await
            .json["status"],
        "verified"
    );
    for from in ["a@acme.test", "A <a@news.acme.test>"] {
        let r = app.post("/v1/emails", &a, send(from)).await;
        assert_eq!(r.status, 202, "{from}: {}", r.text);
    }
    refused(app.post("/v1/emails", &b, send("b@acme.test")).await);
    refused(app.post("/v1/emails", &a, send("a@evilacme.test")).await);
    assert_eq!(queued(&app), 2);

    assert_eq!(app.delete("/v1/domains/acme.test", &a).await.status, 204);
    refused(app.post("/v1/emails", &a, send("a@acme.test")).await);
    assert_eq!(app.get("/v1/domains/acme.test", &a).await.status, 404);
}

#[tokio::test]
async fn with_require_verified_off_pending_names_send_but_never_another_tenants() {
    let dns = DnsServer::start().await;
    let app = app_on(&dns, |s| s.domains.require_verified = false).await;
    let (_, a) = tenant(&app).await;
    let (_, b) = tenant(&app).await;
    // A tenant without domains (a local run) sends as any name nobody holds.
    assert_eq!(
        app.post("/v1/emails", &b, send("b@free.test")).await.status,
        202
    );
    assert_eq!(
        app.post("/v1/domains", &a, json!({"name": "acme.test"}))
            .await
            .status,
        201
    );
    assert_eq!(
        app.post("/v1/emails", &a, send("a@acme.test")).await.status,
        202
    );
    let r = app.post("/v1/emails", &b, send("b@acme.test")).await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (422, Some("from_domain_not_allowed"))
    );
    // Once A has a domain, other names are refused for A.
    let r = app.post("/v1/emails", &a, send("a@free.test")).await;
    assert_eq!(r.status, 422, "{}", r.text);
}

#[tokio::test]
async fn the_recheck_verifies_when_the_record_appears_and_fails_after_the_grace_period() {
    let dns = DnsServer::start().await;
    let rx = Receiver::start().await;
    let grace = Duration::from_secs(3);
    let mut app = app_on(&dns, |s| {
        s.domains.recheck_secs = 1;
        s.domains.grace_secs = grace.as_secs();
        s.webhooks.poll_interval_ms = 50;
    })
    .await;
    app.start_worker();
    let (_, key) = tenant(&app).await;
    let hook = app
        .post(
            "/v1/webhooks",
            &key,
            json!({"url": rx.url("/d"), "events": ["domain.verified", "domain.failed"]}),
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.text);
    let d = app
        .post("/v1/domains", &key, json!({"name": "acme.test"}))
        .await
        .json;
    publish_all(&dns, &d);
    let status = || async {
        app.get("/v1/domains/acme.test", &key).await.json["status"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let wait_for = |want: &'static str, limit: Duration| async move {
        let start = Instant::now();
        loop {
            if status().await == want {
                return start.elapsed();
            }
            assert!(start.elapsed() < limit, "domain never became {want}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    wait_for("verified", Duration::from_secs(30)).await; // no /verify call: the recheck did it
    rx.wait_until(Duration::from_secs(15), |h| {
        h.iter().any(|h| h.body["type"] == "domain.verified")
    })
    .await;

    let (name, _) = dkim_records(&d).remove(0);
    dns.remove(&name);
    let removed = Instant::now();
    // Within the grace period it stays verified (and keeps sending).
    let v = app
        .post("/v1/domains/acme.test/verify", &key, json!({}))
        .await;
    assert_eq!(
        (v.json["status"].as_str(), dkim_status(&v.json)),
        (Some("verified"), vec!["missing".to_string()])
    );
    assert_eq!(
        app.post("/v1/emails", &key, send("a@acme.test"))
            .await
            .status,
        202
    );
    wait_for("failed", Duration::from_secs(40)).await;
    assert!(
        removed.elapsed() >= grace,
        "failed before the grace period ended"
    );
    let hooks = rx
        .wait_until(Duration::from_secs(15), |h| {
            h.iter().any(|h| h.body["type"] == "domain.failed")
        })
        .await;
    let failed = hooks
        .iter()
        .find(|h| h.body["type"] == "domain.failed")
        .unwrap();
    assert_eq!(failed.body["data"]["name"], "acme.test");
    assert_eq!(failed.body["data"]["status"], "failed");
    let r = app.post("/v1/emails", &key, send("a@acme.test")).await;
    assert_eq!(r.status, 422, "a failed domain no longer sends");
}

#[tokio::test]
async fn bad_domain_input_is_a_clear_422_and_changes_nothing() {
    let dns = DnsServer::start().await;
    let app = app_on(&dns, |_| {}).await;
    let (_, key) = tenant(&app).await;
    let long = format!(
        "{}.{}.{}.{}.com",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(25)
    );
    assert_eq!(long.len(), postline::domains::input::MAX_NAME_LEN + 1);
    for body in [
        json!({"name": "localhost"}),
        json!({"name": "bad_name.com"}),
        json!({"name": "acme.com\r\nx"}),
        json!({"name": long}),
        json!({"name": "acme.com", "dkim": {"algorithms": ["ed25519-sha256"]}}),
        json!({"name": "acme.com", "dkim": {"algorithms": ["rsa-sha1"]}}),
        json!({"name": "acme.com", "extra": 1}),
        json!({"name": 5}),
    ] {
        let r = app.post("/v1/domains", &key, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
    }
    let ok = &long[1..]; // exactly at the bound
    assert_eq!(
        app.post("/v1/domains", &key, json!({"name": ok}))
            .await
            .status,
        201
    );
    assert_eq!(
        app.post("/v1/domains", &key, json!({"name": ok}))
            .await
            .status,
        409
    );
    assert_eq!(
        app.get("/v1/domains", &key).await.json["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Permissions: a send-only key cannot read or write domains.
    let t = app.create_tenant(json!({"name": "S"})).await;
    let send_only = app.tenant_key(t["id"].as_str().unwrap(), &["send"]).await;
    assert_eq!(app.get("/v1/domains", &send_only).await.status, 403);
    assert_eq!(
        app.post("/v1/domains", &send_only, json!({"name": "x.test"}))
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn a_tenants_legacy_domain_becomes_its_first_domain_pending() {
    let dns = DnsServer::start().await;
    let app = app_on(&dns, |_| {}).await;
    let t = app
        .create_tenant(json!({"name": "L", "domain": "legacy.test"}))
        .await;
    let id = t["id"].as_str().unwrap();
    let d = app
        .get(
            &format!("/v1/tenants/{id}/domains/legacy.test"),
            &app.admin_key,
        )
        .await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.json["status"], "pending");
    assert_eq!(
        d.json["dkim"].as_array().unwrap().len(),
        1,
        "its key is made on first read"
    );
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            &app.admin_key,
            json!({"domain": "second.test"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let list = app
        .get(&format!("/v1/tenants/{id}/domains"), &app.admin_key)
        .await;
    assert_eq!(list.json["data"].as_array().unwrap().len(), 2);
}
