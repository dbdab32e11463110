//! Finding 6: secrets are typed (redacted `Debug`, wiped on drop), and a full
//! scenario run by the real binary with every target at `debug` writes none
//! of them to its log: the tenant's SMTP password (create and patch), tenant
//! and admin keys, a webhook's signing secret, the master key, and the AUTH
//! exchange with the relay.

use crate::common;

use std::time::Duration;

use base64::Engine;
use common::smtp_sink::{SinkConfig, SmtpSink};
use common::webhook_receiver::Receiver;
use common::Api;
use serde_json::json;

use crate::drills::Server;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_full_scenario_at_debug_logs_no_secret() {
    let (user, password) = ("relay-user", "Relay-Pa55-at-debug");
    let password2 = "Second-Relay-Pa55";
    let sink = SmtpSink::start_with(SinkConfig {
        require_auth: Some((user.into(), password.into())),
        advertise_starttls: false,
        ..Default::default()
    })
    .await;
    let rx = Receiver::start().await;
    let db = common::fresh_database();
    let mut server = Server::new(
        &db,
        sink.port(),
        &[
            ("POSTLINE__LOG__LEVEL", "debug"),
            ("POSTLINE__LOG__FORMAT", "json"),
            ("POSTLINE__DELIVERY__ALLOW_PRIVATE_RELAYS", "true"),
            ("POSTLINE__WEBHOOKS__POLL_INTERVAL_MS", "50"),
        ],
    );
    let admin_key = server.admin_key();
    server.start();
    let client = reqwest::Client::new();
    server.wait_up(&client, WAIT).await;
    let app = Api::remote(&server.base, &admin_key);

    let t = app
        .create_tenant(
            json!({"name": "Acme", "smtp": {"host": "127.0.0.1", "port": sink.port(),
            "tls": "none", "username": user, "password": password}}),
        )
        .await;
    let tid = t["id"].as_str().unwrap();
    let key = app
        .tenant_key(tid, &["send", "emails:read", "webhooks:write"])
        .await;
    let r = app
        .post(
            "/v1/admin-keys",
            &admin_key,
            json!({"name": "second", "permissions": ["tenants:read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let admin2 = r.json["key"].as_str().unwrap().to_string();
    let r = app
        .post(
            "/v1/webhooks",
            &key,
            json!({"url": rx.url("/h"), "events": ["email.delivered"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let whsec = r.json["secret"].as_str().unwrap().to_string();
    rx.add_secret(&whsec);

    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "a@acme.example", "to": "x@example.com", "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(
        got[0].auth_user.as_deref(),
        Some(user),
        "delivered with AUTH"
    );
    let hooks = rx.wait_until(WAIT, |h| h.iter().any(|h| h.verified)).await;
    assert!(hooks.iter().any(|h| h.verified));
    let r = app
        .patch(
            &format!("/v1/tenants/{tid}"),
            &admin_key,
            json!({"smtp": {"password": password2}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.get("/v1/tenants", &admin2).await.status, 200);
    server.terminate(Duration::from_secs(10));

    let text = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(
        text.lines()
            .filter(|l| l.contains("\"level\":\"DEBUG\""))
            .count()
            >= 3,
        "the log really is at debug: {}",
        server.log_tail()
    );
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret_of = |k: &str| k.rsplit_once('_').unwrap().1.to_string();
    let forbidden = [
        password.to_string(),
        password2.to_string(),
        b64(password),
        b64(&format!("\0{user}\0{password}")),
        key.clone(),
        secret_of(&key),
        admin_key.clone(),
        secret_of(&admin_key),
        admin2.clone(),
        secret_of(&admin2),
        whsec.clone(),
        whsec.trim_start_matches("whsec_").to_string(),
        // config/test.toml's master key
        "lp/t64kHPh+As/WaviVVsnSF/40h+B8Bh5sqk/LVZ+s=".to_string(),
    ];
    for s in &forbidden {
        assert!(!text.contains(s.as_str()), "a secret reached the log: {s}");
    }
}

/// `Debug` of every input type that carries a secret leaves it out.
#[test]
fn debug_redacts_secret_inputs() {
    let patch: postline::tenants::input::UpdateTenant =
        serde_json::from_value(json!({"smtp": {"host": "h.example", "password": "p-in-debug"}}))
            .unwrap();
    assert!(!format!("{patch:?}").contains("p-in-debug"));
    let token = format!("pl_live_{}_{}", "a".repeat(16), "B".repeat(32));
    let parsed = postline::auth::token::parse(&token).unwrap();
    assert!(!format!("{parsed:?}").contains(&"B".repeat(32)));
    let t = postline::auth::token::generate(postline::domain::KeyKind::Live).unwrap();
    assert!(!format!("{:?}", t.token).contains(&t.key_id));
}
