//! Webhooks end to end: real HTTP receivers on loopback that verify Standard
//! Webhooks signatures, the outbox written with status changes, retries,
//! 410 Gone, platform-wide endpoints, the SSRF guard, and secrets at rest.

use crate::common;

use std::time::Duration;

use common::smtp_sink::SmtpSink;
use common::webhook_receiver::Receiver;
use common::TestApp;
use diesel::prelude::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

/// Fast retries for tests.
fn fast(s: &mut postline::config::Settings) {
    s.webhooks.retry_initial_ms = 200;
    s.webhooks.retry_max_ms = 1000;
    s.webhooks.poll_interval_ms = 50;
}

async fn tenant(app: &TestApp, body: Value, perms: &[&str]) -> (String, String) {
    let t = app.create_tenant(body).await;
    let id = t["id"].as_str().unwrap().to_string();
    let key = app.tenant_key(&id, perms).await;
    (id, key)
}

const ALL: &[&str] = &["send", "emails:read", "webhooks:read", "webhooks:write"];

async fn send(app: &TestApp, key: &str) -> String {
    let r = app
        .post(
            "/v1/emails",
            key,
            json!({"from": "hi@acme.test", "to": "ann@example.com", "subject": "Hello",
                   "text": "t", "tags": {"kind": "test"}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

async fn create_hook(app: &TestApp, path: &str, key: &str, url: &str, events: Value) -> Value {
    let r = app
        .post(
            path,
            key,
            json!({"url": url, "events": events, "description": "test"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json
}

#[tokio::test]
async fn signed_delivery_is_retried_after_a_500_with_the_same_webhook_id() {
    let sink = SmtpSink::start().await;
    let rx = Receiver::start().await;
    rx.script(&[500]);
    let app = TestApp::spawn_serving(sink.port(), fast).await;
    let (tid, key) = tenant(&app, json!({"name": "Acme", "external_id": "acme"}), ALL).await;
    let hook = create_hook(
        &app,
        "/v1/webhooks",
        &key,
        &rx.url("/hook"),
        json!(["email.delivered"]),
    )
    .await;
    let secret = hook["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    rx.add_secret(secret);

    let email_id = send(&app, &key).await;
    let got = rx
        .wait_until(WAIT, |h| h.iter().any(|x| x.answered == 200))
        .await;
    assert_eq!(got.len(), 2, "one failure, one success: {got:#?}");
    assert_eq!(got[0].answered, 500);
    assert!(
        got.iter().all(|h| h.verified),
        "signatures verify: {got:#?}"
    );
    assert_eq!(
        got[0].webhook_id, got[1].webhook_id,
        "webhook-id is stable across retries"
    );
    assert_eq!(got[0].body, got[1].body);
    let p = &got[1].body;
    assert_eq!(p["type"], "email.delivered");
    assert!(p["timestamp"].as_str().unwrap().ends_with('Z'));
    let d = &p["data"];
    assert_eq!(d["email_id"], email_id.as_str());
    assert_eq!(d["tenant_id"], tid.as_str());
    assert_eq!(d["external_tenant_id"], "acme");
    assert_eq!(d["to"], json!(["ann@example.com"]));
    assert_eq!(d["subject"], "Hello");
    assert_eq!(d["tags"], json!({"kind": "test"}));
    assert!(
        d["smtp_response"].as_str().unwrap().starts_with("250"),
        "{d}"
    );
    assert!(
        got.iter().all(|h| h.body["type"] == "email.delivered"),
        "filtered to delivered"
    );

    // The deliveries log shows both attempts.
    let hook_id = hook["id"].as_str().unwrap();
    let log = app
        .get(&format!("/v1/webhooks/{hook_id}/deliveries"), &key)
        .await;
    assert_eq!(log.status, 200, "{}", log.text);
    let entry = &log.json["data"][0];
    assert_eq!(entry["id"], got[0].webhook_id.as_str());
    assert_eq!(entry["status"], "succeeded");
    assert_eq!(entry["attempts"], 2);
    let codes: Vec<i64> = entry["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![500, 200]);
    assert!(entry["log"][0]["duration_ms"].is_i64());
}

/// The dispatcher is woken by new outbox rows — `email.queued` through the
/// queue's NOTIFY, outcomes by the worker that recorded them — so events
/// arrive at once although its own poll is a minute here.
#[tokio::test]
async fn events_are_dispatched_when_committed_not_at_the_next_poll() {
    let sink = SmtpSink::start().await;
    let rx = Receiver::start().await;
    let app = TestApp::spawn_serving(sink.port(), |s| {
        fast(s);
        s.webhooks.poll_interval_ms = 60_000;
    })
    .await;
    let (_, key) = tenant(&app, json!({"name": "Acme"}), ALL).await;
    let hook = create_hook(
        &app,
        "/v1/webhooks",
        &key,
        &rx.url("/hook"),
        json!(["email.queued", "email.delivered"]),
    )
    .await;
    rx.add_secret(hook["secret"].as_str().unwrap());
    // The dispatcher's first claim (at start) found nothing; it now sleeps.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    send(&app, &key).await;
    let got = rx.wait_until(WAIT, |h| h.len() >= 2).await;
    let mut types: Vec<&str> = got
        .iter()
        .map(|h| h.body["type"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(types, ["email.delivered", "email.queued"]);
    assert!(got.iter().all(|h| h.verified));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the commits, not by the 60 s poll: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn platform_webhook_sees_every_tenants_events_and_tenant_webhooks_only_their_own() {
    let sink = SmtpSink::start().await;
    let platform = Receiver::start().await;
    let own = Receiver::start().await;
    let app = TestApp::spawn_serving(sink.port(), fast).await;
    let admin = app.admin_key.clone();
    let hook = create_hook(
        &app,
        "/v1/admin/webhooks",
        &admin,
        &platform.url("/all"),
        json!(["*"]),
    )
    .await;
    assert!(hook["tenant_id"].is_null());
    platform.add_secret(hook["secret"].as_str().unwrap());
    let (a, key_a) = tenant(&app, json!({"name": "A", "external_id": "clinic-a"}), ALL).await;
    let (b, key_b) = tenant(&app, json!({"name": "B", "external_id": "clinic-b"}), ALL).await;
    let hook_a = create_hook(&app, "/v1/webhooks", &key_a, &own.url("/a"), json!(["*"])).await;
    own.add_secret(hook_a["secret"].as_str().unwrap());

    let ea = send(&app, &key_a).await;
    let eb = send(&app, &key_b).await;
    let got = platform
        .wait_until(WAIT, |h| {
            h.iter()
                .filter(|x| x.body["type"] == "email.delivered")
                .count()
                == 2
        })
        .await;
    assert!(got.iter().all(|h| h.verified));
    let seen = |email: &str, kind: &str| {
        got.iter()
            .find(|h| h.body["data"]["email_id"] == email && h.body["type"] == kind)
            .map(|h| h.body["data"].clone())
    };
    for (email, tenant, ext) in [(&ea, &a, "clinic-a"), (&eb, &b, "clinic-b")] {
        for kind in ["email.queued", "email.delivered"] {
            let d = seen(email, kind).unwrap_or_else(|| panic!("{kind} of {email} missing"));
            assert_eq!(d["tenant_id"], tenant.as_str());
            assert_eq!(d["external_tenant_id"], ext);
        }
    }
    // Tenant A's own endpoint never sees tenant B's mail.
    let mine = own
        .wait_until(WAIT, |h| {
            h.iter().any(|x| x.body["type"] == "email.delivered")
        })
        .await;
    assert!(mine
        .iter()
        .all(|h| h.body["data"]["tenant_id"] == a.as_str() && h.verified));
    // Admin listing of platform hooks, tenant listing of its own: no secrets.
    let list = app.get("/v1/admin/webhooks", &admin).await;
    assert_eq!(list.json["data"].as_array().unwrap().len(), 1);
    assert!(!list.text.contains("whsec_"));
    // The platform endpoint's log (its own outbox): every tenant's events,
    // each with the event's tenant and its attempts; a tenant's endpoint
    // log holds its tenant's only.
    let pid = hook["id"].as_str().unwrap();
    // (The dispatcher records outcomes in batches: wait for both.)
    let started = std::time::Instant::now();
    let delivered: Vec<serde_json::Value> = loop {
        let log = app
            .get(
                &format!("/v1/admin/webhooks/{pid}/deliveries?limit=100"),
                &admin,
            )
            .await;
        assert_eq!(log.status, 200, "{}", log.text);
        let done: Vec<serde_json::Value> = log.json["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["event_type"] == "email.delivered" && d["status"] == "succeeded")
            .cloned()
            .collect();
        if done.len() == 2 {
            break done;
        }
        assert!(started.elapsed() < WAIT, "{}", log.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(delivered
        .iter()
        .all(|d| !d["log"].as_array().unwrap().is_empty()));
    let tenants: std::collections::BTreeSet<&str> = delivered
        .iter()
        .map(|d| d["tenant_id"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, [a.as_str(), b.as_str()].into_iter().collect());
    let aid = hook_a["id"].as_str().unwrap();
    let log_a = app
        .get(&format!("/v1/webhooks/{aid}/deliveries?limit=100"), &key_a)
        .await;
    assert_eq!(log_a.status, 200, "{}", log_a.text);
    assert!(log_a.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["tenant_id"] == a.as_str()));
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_enabled_true_revives_it() {
    let sink = SmtpSink::start().await;
    let rx = Receiver::start().await;
    rx.set_default_status(410);
    let app = TestApp::spawn_serving(sink.port(), fast).await;
    let (_, key) = tenant(&app, json!({"name": "A"}), ALL).await;
    let hook = create_hook(&app, "/v1/webhooks", &key, &rx.url("/gone"), json!(["*"])).await;
    rx.add_secret(hook["secret"].as_str().unwrap());
    let id = hook["id"].as_str().unwrap();

    let ping = app
        .post(&format!("/v1/webhooks/{id}/test"), &key, json!({}))
        .await;
    assert_eq!(ping.status, 200, "{}", ping.text);
    assert_eq!(ping.json["event_type"], "webhook.test");
    assert_eq!(ping.json["status"], "failed");
    assert_eq!(ping.json["last_status_code"], 410);
    assert!(rx.received()[0].verified);
    let w = app.get(&format!("/v1/webhooks/{id}"), &key).await;
    assert_eq!(w.json["enabled"], false, "{}", w.text);
    assert!(w.json["disabled_reason"].as_str().unwrap().contains("410"));

    // Disabled: new events create no deliveries.
    let email = send(&app, &key).await;
    let mut conn = app.sql_conn();
    wait_email_status(&app, &key, &email, "delivered").await;
    let rows: i64 = {
        use postline::db::schema::webhook_deliveries::dsl::*;
        webhook_deliveries.count().get_result(&mut conn).unwrap()
    };
    assert_eq!(rows, 1, "only the ping");

    // Re-enabled, it receives again.
    rx.set_default_status(200);
    let r = app
        .put(
            &format!("/v1/webhooks/{id}"),
            &key,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["enabled"], true);
    assert!(r.json["disabled_reason"].is_null());
    assert_eq!(
        r.json["description"], "test",
        "PUT changes only the given fields"
    );
    send(&app, &key).await;
    rx.wait_until(WAIT, |h| {
        h.iter().any(|x| x.body["type"] == "email.delivered")
    })
    .await;
}

async fn wait_email_status(app: &TestApp, key: &str, id: &str, status: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = app.get(&format!("/v1/emails/{id}"), key).await;
        if r.json["status"] == status {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_delivery_that_keeps_failing_gives_up_after_the_retry_window() {
    let sink = SmtpSink::start().await;
    let rx = Receiver::start().await;
    rx.set_default_status(503);
    let app = TestApp::spawn_serving(sink.port(), |s| {
        fast(s);
        s.webhooks.retry_window_secs = 1;
    })
    .await;
    let (_, key) = tenant(&app, json!({"name": "A"}), ALL).await;
    let hook = create_hook(
        &app,
        "/v1/webhooks",
        &key,
        &rx.url("/down"),
        json!(["email.queued"]),
    )
    .await;
    let id = hook["id"].as_str().unwrap();
    send(&app, &key).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let log = app
            .get(&format!("/v1/webhooks/{id}/deliveries"), &key)
            .await;
        let d = &log.json["data"][0];
        if d["status"] == "failed" {
            assert!(d["attempts"].as_i64().unwrap() >= 2, "{d}");
            assert!(d["last_error"].as_str().unwrap().contains("gave up"), "{d}");
            assert_eq!(d["last_status_code"], 503);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", log.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The log is pruned once finished deliveries pass the retention.
    use postline::webhooks::deliveries::purge_finished;
    let mut conn = app.sql_conn();
    assert_eq!(purge_finished(&mut conn, 1).unwrap(), 0);
    diesel::sql_query("UPDATE webhook_deliveries SET completed_at = now() - interval '2 days'")
        .execute(&mut conn)
        .unwrap();
    assert_eq!(purge_finished(&mut conn, 1).unwrap(), 1);
    let log = app
        .get(&format!("/v1/webhooks/{id}/deliveries"), &key)
        .await;
    assert_eq!(log.json["data"], json!([]));
}

#[tokio::test]
async fn nobody_subscribed_means_no_outbox_rows() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), fast).await;
    let (_, key) = tenant(&app, json!({"name": "A"}), ALL).await;
    let email = send(&app, &key).await;
    wait_email_status(&app, &key, &email, "delivered").await;
    use postline::db::schema::webhook_deliveries::dsl::*;
    let n: i64 = webhook_deliveries
        .count()
        .get_result(&mut app.sql_conn())
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn ssrf_vectors_are_refused_at_creation() {
    let app = TestApp::spawn_with(|s| {
        s.webhooks.allow_private_targets = false;
        s.delivery.allow_private_relays = false;
    })
    .await;
    let (tid, key) = tenant(&app, json!({"name": "A"}), ALL).await;
    let vectors = [
        "http://127.0.0.1/hook",
        "http://127.1/",
        "http://localhost:8080/",
        "http://app.localhost/",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f.1/",
        "http://0x7f000001/",
        "http://[::1]/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a00:1]/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.0.10/",
        "http://169.254.10.10/",
        "http://100.64.0.1/",
        "http://[fc00::1]/",
        "http://[fd12:3456::1]/",
        "http://[fe80::1]/",
        "http://255.255.255.255/",
        "http://224.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/",
        "http://134744072/",
    ];
    for url in vectors {
        let r = app
            .post("/v1/webhooks", &key, json!({"url": url, "events": ["*"]}))
            .await;
        assert_eq!(r.status, 422, "{url}: {}", r.text);
        assert_eq!(r.json["errors"][0]["field"], "url", "{url}");
    }
    // An update cannot sneak one in either.
    let ok = create_hook(
        &app,
        "/v1/webhooks",
        &key,
        "https://hooks.invalid/x",
        json!(["*"]),
    )
    .await;
    let id = ok["id"].as_str().unwrap();
    let r = app
        .put(
            &format!("/v1/webhooks/{id}"),
            &key,
            json!({"url": "http://0x7f.1/"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let list = app.get("/v1/webhooks", &key).await;
    assert_eq!(list.json["data"].as_array().unwrap().len(), 1);
    assert_eq!(list.json["data"][0]["url"], "https://hooks.invalid/x");

    // SMTP overrides: the same guard under delivery.allow_private_relays.
    for host in [
        "127.0.0.1",
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "localhost",
        "10.1.2.3",
        "169.254.169.254",
    ] {
        let r = app
            .patch(
                &format!("/v1/tenants/{tid}"),
                &app.admin_key,
                json!({"smtp": {"host": host, "port": 25, "tls": "none"}}),
            )
            .await;
        assert_eq!(r.status, 422, "{host}: {}", r.text);
        assert_eq!(r.json["errors"][0]["field"], "smtp.host");
        let r = app
            .post(
                "/v1/tenants",
                &app.admin_key,
                json!({"name": "X", "smtp": {"host": host}}),
            )
            .await;
        assert_eq!(r.status, 422, "{host}: {}", r.text);
    }
}

#[tokio::test]
async fn metadata_is_refused_even_when_private_targets_are_allowed() {
    let app = TestApp::spawn().await; // tests allow private targets
    let (tid, key) = tenant(&app, json!({"name": "A"}), ALL).await;
    for url in [
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
        "http://0xa9fea9fe/",
        "http://2852039166/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ] {
        let r = app
            .post("/v1/webhooks", &key, json!({"url": url, "events": ["*"]}))
            .await;
        assert_eq!(r.status, 422, "{url}: {}", r.text);
    }
    let r = app
        .patch(
            &format!("/v1/tenants/{tid}"),
            &app.admin_key,
            json!({"smtp": {"host": "169.254.169.254"}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = app
        .post(
            "/v1/webhooks",
            &key,
            json!({"url": "http://127.0.0.1:9/", "events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 201, "loopback is allowed here: {}", r.text);
}

/// A name (not an IP literal, not `localhost`) that resolves only to
/// loopback here: the machine's host name or an /etc/hosts alias.
async fn loopback_alias() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| vec![h.trim().to_string()])
        .unwrap_or_default();
    names.extend(["vm".to_string(), "runsc".to_string()]);
    for n in names
        .into_iter()
        .filter(|n| !n.is_empty() && n != "localhost")
    {
        if let Ok(addrs) = tokio::net::lookup_host((n.clone(), 80)).await {
            let addrs: Vec<_> = addrs.collect();
            if !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()) {
                return Some(n);
            }
        }
    }
    None
}

#[tokio::test]
async fn connect_time_guard_refuses_names_that_resolve_to_loopback() {
    let Some(alias) = loopback_alias().await else {
        eprintln!("no host name resolving to loopback here; skipped");
        return;
    };
    let sink = SmtpSink::start().await;
    let rx = Receiver::start().await;
    let app = TestApp::spawn_serving(sink.port(), |s| {
        fast(s);
        s.webhooks.allow_private_targets = false;
        s.delivery.allow_private_relays = false;
    })
    .await;
    let (tid, key) = tenant(&app, json!({"name": "A"}), ALL).await;
    // Saving the alias is refused (it resolves to loopback now)...
    let url = format!("http://{alias}:{}/hook", rx.port());
    let r = app
        .post("/v1/webhooks", &key, json!({"url": url, "events": ["*"]}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    // ...so make it look like DNS changed after saving.
    let hook = create_hook(
        &app,
        "/v1/webhooks",
        &key,
        "https://hooks.invalid/x",
        json!(["*"]),
    )
    .await;
    let hook_id = hook["id"].as_str().unwrap();
    let mut conn = app.sql_conn();
    diesel::sql_query(format!(
        "UPDATE webhooks SET url = '{url}' WHERE id = '{hook_id}'"
    ))
    .execute(&mut conn)
    .unwrap();
    diesel::sql_query(format!(
        "UPDATE tenants SET smtp_host = '{alias}', smtp_port = {}, smtp_tls = 'none' WHERE id = '{tid}'",
        sink.port()
    ))
    .execute(&mut conn)
    .unwrap();
    app.state.tenants.invalidate_all();

    let email = send(&app, &key).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let e = app.get(&format!("/v1/emails/{email}"), &key).await;
        let log = app
            .get(&format!("/v1/webhooks/{hook_id}/deliveries"), &key)
            .await;
        let mail_refused = e.json["last_error"]
            .as_str()
            .is_some_and(|s| s.contains("SSRF guard"));
        let hook_refused = log.json["data"].as_array().unwrap().iter().any(|d| {
            d["last_error"]
                .as_str()
                .is_some_and(|s| s.contains("SSRF guard"))
        });
        if mail_refused && hook_refused {
            assert_eq!(e.json["status"], "deferred");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}\n{}",
            e.text,
            log.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rx.received().is_empty(), "nothing reached the receiver");
    assert!(sink.messages().is_empty(), "nothing reached the relay");
}

#[tokio::test]
async fn secrets_are_shown_once_and_sealed_at_rest() {
    let app = TestApp::spawn().await;
    let (_, key) = tenant(&app, json!({"name": "A"}), ALL).await;
    let hook = create_hook(
        &app,
        "/v1/webhooks",
        &key,
        "http://127.0.0.1:9/x",
        json!(["email.failed"]),
    )
    .await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    let id = hook["id"].as_str().unwrap();
    let raw = postline::webhooks::signing::decode(&secret).unwrap();
    assert_eq!(raw.len(), 32);
    for r in [
        app.get("/v1/webhooks", &key).await,
        app.get(&format!("/v1/webhooks/{id}"), &key).await,
        app.put(
            &format!("/v1/webhooks/{id}"),
            &key,
            json!({"description": "x"}),
        )
        .await,
    ] {
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(
            !r.text.contains(&secret) && !r.text.contains("secret"),
            "{}",
            r.text
        );
    }
    #[derive(QueryableByName)]
    struct Sealed {
        #[diesel(sql_type = diesel::sql_types::Bytea)]
        secret_enc: Vec<u8>,
    }
    let row: Sealed =
        diesel::sql_query(format!("SELECT secret_enc FROM webhooks WHERE id = '{id}'"))
            .get_result(&mut app.sql_conn())
            .unwrap();
    assert!(!row
        .secret_enc
        .windows(raw.len())
        .any(|w| w == raw.as_slice()));
    assert!(!row
        .secret_enc
        .windows(secret.len())
        .any(|w| w == secret.as_bytes()));
    let b64 = secret.trim_start_matches("whsec_");
    assert!(!row
        .secret_enc
        .windows(b64.len())
        .any(|w| w == b64.as_bytes()));
    let opened = app
        .state
        .vault
        .open(
            &row.secret_enc,
            &postline::webhooks::signing::secret_context(id.parse().unwrap()),
        )
        .unwrap();
    assert_eq!(*opened, raw);
}

#[tokio::test]
async fn isolation_permissions_and_validation() {
    let app = TestApp::spawn().await;
    let admin = app.admin_key.clone();
    let (a, key_a) = tenant(&app, json!({"name": "A"}), ALL).await;
    let (_, key_b) = tenant(&app, json!({"name": "B"}), ALL).await;
    let (_, read_only) = tenant(&app, json!({"name": "C"}), &["webhooks:read"]).await;
    let hook = create_hook(
        &app,
        "/v1/webhooks",
        &key_a,
        "http://127.0.0.1:9/a",
        json!(["*"]),
    )
    .await;
    let id = hook["id"].as_str().unwrap();
    let platform = create_hook(
        &app,
        "/v1/admin/webhooks",
        &admin,
        "http://127.0.0.1:9/p",
        json!(["*"]),
    )
    .await;
    let pid = platform["id"].as_str().unwrap();

    // Another tenant's endpoint (or a platform one) looks like nothing.
    for (m, path) in [
        ("GET", format!("/v1/webhooks/{id}")),
        ("PUT", format!("/v1/webhooks/{id}")),
        ("DELETE", format!("/v1/webhooks/{id}")),
        ("GET", format!("/v1/webhooks/{id}/deliveries")),
        ("POST", format!("/v1/webhooks/{id}/test")),
        ("GET", format!("/v1/webhooks/{pid}")),
        ("GET", "/v1/webhooks/not-a-uuid".to_string()),
    ] {
        let r = app.request(m, &path, Some(&key_b), Some(json!({}))).await;
        assert_eq!(r.status, 404, "{m} {path}: {}", r.text);
    }
    assert_eq!(
        app.get("/v1/webhooks", &key_b).await.json["data"],
        json!([])
    );
    // Admin forms: the tenant path, the platform path; the tenant form needs a tenant key.
    let r = app
        .get(&format!("/v1/tenants/{a}/webhooks/{id}"), &admin)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        app.get(&format!("/v1/admin/webhooks/{id}"), &admin)
            .await
            .status,
        404
    );
    assert_eq!(
        app.get("/v1/webhooks", &admin).await.json["code"],
        "tenant_key_required"
    );
    assert_eq!(
        app.get("/v1/admin/webhooks", &key_a).await.json["code"],
        "admin_only"
    );
    assert_eq!(
        app.get(&format!("/v1/tenants/{a}/webhooks"), &key_a)
            .await
            .json["code"],
        "admin_only"
    );
    // Permissions.
    let r = app
        .post(
            "/v1/webhooks",
            &read_only,
            json!({"url": "http://127.0.0.1:9/", "events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(app.get("/v1/webhooks", &read_only).await.status, 200);
    // Validation: nothing changes on a bad body.
    for body in [
        json!({"url": "http://127.0.0.1:9/", "events": ["email.teleported"]}),
        json!({"url": "http://127.0.0.1:9/", "events": []}),
        json!({"url": "http://127.0.0.1:9/", "events": ["*", "email.failed"]}),
        json!({"url": "not a url", "events": ["*"]}),
        json!({"url": "http://127.0.0.1:9/", "events": ["*"], "secret": "x"}),
        json!({"url": "http://127.0.0.1:9/"}),
    ] {
        let r = app.post("/v1/webhooks", &key_a, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
    }
    let r = app
        .put(
            &format!("/v1/webhooks/{id}"),
            &key_a,
            json!({"events": ["nope"], "description": "changed"}),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = app.get(&format!("/v1/webhooks/{id}"), &key_a).await;
    assert_eq!(r.json["description"], "test");
    let r = app
        .put(
            &format!("/v1/webhooks/{id}"),
            &key_a,
            json!({"events": ["email.bounced", "email.failed"]}),
        )
        .await;
    assert_eq!(r.json["events"], json!(["email.bounced", "email.failed"]));
    assert_eq!(r.json["url"], "http://127.0.0.1:9/a");
    assert_eq!(
        app.delete(&format!("/v1/webhooks/{id}"), &key_a)
            .await
            .status,
        204
    );
    assert_eq!(
        app.get(&format!("/v1/webhooks/{id}"), &key_a).await.status,
        404
    );
}
