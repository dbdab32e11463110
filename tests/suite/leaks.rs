//! Finding 5: a tenant reads its own outcome (the relay's reply) but never
//! the platform's infrastructure: no relay address, no capture path, no
//! constraint name, in anything it can read (the email, its events, webhook
//! payloads, the webhook log, problem details).

use crate::common;

use std::time::Duration;

use common::webhook_receiver::Receiver;
use common::TestApp;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn send(app: &TestApp, key: &str) -> String {
    let r = app
        .post(
            "/v1/emails",
            key,
            json!({"from": "hi@acme.test", "to": "ann@example.com", "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

/// Polls the email until `pred` holds on its JSON; returns the raw text.
async fn wait_email(app: &TestApp, key: &str, id: &str, pred: impl Fn(&Value) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = app.get(&format!("/v1/emails/{id}"), key).await;
        assert_eq!(r.status, 200, "{}", r.text);
        if pred(&r.json) {
            return r.text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_clean(surface: &str, text: &str, forbidden: &[String]) {
    for f in forbidden {
        assert!(!text.contains(f.as_str()), "{surface} shows {f:?}: {text}");
    }
}

#[tokio::test]
async fn relay_addresses_never_reach_the_tenant() {
    let rx = Receiver::start().await;
    let default_port = closed_port();
    let own_port = closed_port();
    let app = TestApp::spawn_serving(default_port, |s| {
        s.webhooks.poll_interval_ms = 50;
    })
    .await;
    let perms = ["send", "emails:read", "webhooks:read", "webhooks:write"];
    let a = app.create_tenant(json!({"name": "A"})).await;
    let key_a = app.tenant_key(a["id"].as_str().unwrap(), &perms).await;
    let b = app
        .create_tenant(
            json!({"name": "B", "smtp": {"host": "127.0.0.1", "port": own_port, "tls": "none"}}),
        )
        .await;
    let key_b = app.tenant_key(b["id"].as_str().unwrap(), &perms).await;
    let mut hooks = Vec::new();
    for key in [&key_a, &key_b] {
        let r = app
            .post(
                "/v1/webhooks",
                key,
                json!({"url": rx.url("/h"), "events": ["*"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        rx.add_secret(r.json["secret"].as_str().unwrap());
        hooks.push(r.json["id"].as_str().unwrap().to_string());
    }
    let ea = send(&app, &key_a).await;
    let eb = send(&app, &key_b).await;

    let forbidden: Vec<String> = [default_port, own_port]
        .iter()
        .flat_map(|p| [format!(":{p}"), format!("{p})"), format!(" {p}")])
        .chain(["127.0.0.1".to_string()])
        .collect();
    let deferred = |v: &Value| v["status"] == "deferred";
    for (key, id) in [(&key_a, &ea), (&key_b, &eb)] {
        let text = wait_email(&app, key, id, deferred).await;
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(
            v["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("connection refused")),
            "the tenant still learns what happened: {text}"
        );
        assert_clean("GET email", &text, &forbidden);
        assert_clean(
            "GET emails",
            &app.get("/v1/emails", key).await.text,
            &forbidden,
        );
    }
    let got = rx
        .wait_until(WAIT, |h| {
            h.iter()
                .filter(|h| h.body["type"] == "email.deferred")
                .count()
                >= 2
        })
        .await;
    for h in &got {
        assert_clean("webhook payload", &h.body.to_string(), &forbidden);
    }
    for (key, hook) in [(&key_a, &hooks[0]), (&key_b, &hooks[1])] {
        let log = app
            .get(&format!("/v1/webhooks/{hook}/deliveries"), key)
            .await;
        assert_eq!(log.status, 200);
        assert_clean("webhook log", &log.text, &forbidden);
    }
}

#[tokio::test]
async fn capture_paths_stay_with_the_operator() {
    let dir = std::env::temp_dir().join(format!("pl-capture-{}", uuid::Uuid::new_v4().simple()));
    let capture_dir = dir.clone();
    let mut app = TestApp::spawn_with(move |s| {
        s.delivery.mode = postline::config::DeliveryMode::Capture;
        s.delivery.capture_dir = capture_dir;
        s.worker.poll_interval_ms = 100;
    })
    .await;
    app.start_worker();
    let t = app.create_tenant(json!({"name": "A"})).await;
    let tid = t["id"].as_str().unwrap();
    let key = app.tenant_key(tid, &["send", "emails:read"]).await;
    let id = send(&app, &key).await;
    let text = wait_email(&app, &key, &id, |v| v["status"] == "delivered").await;
    assert!(text.contains("250 captured"), "{text}");
    let forbidden = vec![
        dir.display().to_string(),
        ".eml".to_string(),
        std::env::temp_dir().display().to_string(),
    ];
    assert_clean("GET email", &text, &forbidden);
    assert!(
        dir.join(tid).join(format!("{id}.eml")).exists(),
        "the message was captured all the same"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn conflicts_name_no_constraint() {
    let app = TestApp::spawn().await;
    app.create_tenant(json!({"name": "A", "external_id": "clinic-1"}))
        .await;
    let r = app
        .post(
            "/v1/tenants",
            &app.admin_key,
            json!({"name": "B", "external_id": "clinic-1"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    for name in ["tenants_external_id_live", "constraint", "index", "unique"] {
        assert!(!r.text.contains(name), "{}", r.text);
    }
    let t = app.create_tenant(json!({"name": "C"})).await;
    let key = app
        .tenant_key(t["id"].as_str().unwrap(), &["templates:write"])
        .await;
    let body = json!({"name": "dup", "subject": "s", "text": "t"});
    assert_eq!(
        app.post("/v1/templates", &key, body.clone()).await.status,
        201
    );
    let r = app.post("/v1/templates", &key, body).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(!r.text.contains("templates_tenant_name"), "{}", r.text);
}
