//! Master key rotation: re-encrypt every stored secret while the old key is
//! still accepted, proven against Postgres and a relay that checks credentials.

use crate::common;

use std::time::Duration;

use base64::Engine;
use common::smtp_sink::{SinkConfig, SmtpSink};
use common::TestApp;
use postline::config::Secret;
use postline::crypto::Vault;
use serde_json::json;

fn sealed_password(app: &TestApp, id: uuid::Uuid) -> Vec<u8> {
    use diesel::prelude::*;
    use postline::db::schema::tenants::dsl;
    dsl::tenants
        .filter(dsl::id.eq(id))
        .select(dsl::smtp_password_enc.assume_not_null())
        .first(&mut app.sql_conn())
        .unwrap()
}

#[tokio::test]
async fn rotate_reencrypts_and_delivery_works_before_and_after() {
    let relay = SmtpSink::start_with(SinkConfig {
        require_auth: Some(("user".into(), "relay-secret".into())),
        ..Default::default()
    })
    .await;
    let old_app = TestApp::spawn().await;
    let t = old_app
        .create_tenant(json!({"name": "A", "smtp": {"host": "127.0.0.1", "port": relay.port(), "tls": "none", "username": "user", "password": "relay-secret"}}))
        .await;
    let tid = uuid::Uuid::parse_str(t["id"].as_str().unwrap()).unwrap();
    let key = old_app.tenant_key(&tid.to_string(), &["send"]).await;

    // A node configured for the rotation: new master key, old one as previous.
    let b64 = base64::engine::general_purpose::STANDARD;
    let old_key = old_app.state.settings.security.master_key.clone();
    let new_key = b64.encode([42u8; 32]);
    let mut settings = common::test_settings(&old_app.db_url);
    common::smtp_settings(&mut settings, 9); // default relay unused: the tenant has an override
    settings.security.master_key = Secret::new(new_key.clone());
    settings.security.previous_master_keys = old_key.clone();
    let mut new_app = TestApp::spawn_on(settings).await;
    new_app.start_worker();

    let send = |to: &'static str| {
        let (app, key) = (&new_app, key.clone());
        async move {
            let r = app
                .post(
                    "/v1/emails",
                    &key,
                    json!({"from": "a@a.example", "to": to, "subject": "s", "text": "t"}),
                )
                .await;
            assert_eq!(r.status, 202, "{}", r.text);
        }
    };
    // before the rotation: the old ciphertext opens with the previous key
    send("before@example.com").await;
    let got = relay.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(got[0].auth_user.as_deref(), Some("user"));

    let vault = new_app.state.settings.vault().unwrap();
    assert!(!vault.is_current(&sealed_password(&new_app, tid)));
    let mut conn = new_app.sql_conn();
    let report = postline::secrets::rotate(&mut conn, &vault).unwrap();
    assert_eq!(report[0].1.rotated, 1);
    let sealed = sealed_password(&new_app, tid);
    assert!(vault.is_current(&sealed));
    let ctx = postline::tenants::input::smtp_password_context(tid);
    let new_only = Vault::new(&b64.decode(&new_key).unwrap().try_into().unwrap());
    assert_eq!(
        *new_only.open(&sealed, &ctx).unwrap(),
        b"relay-secret".to_vec()
    );
    let old_only = old_app.state.vault.clone();
    assert!(
        old_only.open(&sealed, &ctx).is_err(),
        "the old key alone no longer opens it"
    );
    // idempotent
    assert_eq!(
        postline::secrets::rotate(&mut conn, &vault).unwrap()[0]
            .1
            .already_current,
        1
    );

    // after: delivery still authenticates with the re-encrypted password
    send("after@example.com").await;
    let got = relay.wait_for(2, Duration::from_secs(15)).await;
    assert!(got.iter().all(|m| m.auth_user.as_deref() == Some("user")));

    // without the old key a value sealed by it cannot be rotated: a clear error
    let t2 = old_app
        .create_tenant(json!({"name": "B", "smtp": {"host": "127.0.0.1", "port": relay.port(), "password": "x"}}))
        .await;
    assert!(t2["smtp"]["password_set"].as_bool().unwrap());
    let err = postline::secrets::rotate(&mut conn, &new_only)
        .unwrap_err()
        .to_string();
    assert!(err.contains("previous_master_keys"), "{err}");
}

#[tokio::test]
async fn rotate_reseals_webhook_secrets_and_signatures_still_verify() {
    use common::webhook_receiver::Receiver;
    let rx = Receiver::start().await;
    let old_app = TestApp::spawn().await;
    let t = old_app.create_tenant(json!({"name": "A"})).await;
    let key = old_app
        .tenant_key(
            t["id"].as_str().unwrap(),
            &["webhooks:read", "webhooks:write"],
        )
        .await;
    let r = old_app
        .post(
            "/v1/webhooks",
            &key,
            json!({"url": rx.url("/h"), "events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    rx.add_secret(r.json["secret"].as_str().unwrap());
    let id = r.json["id"].as_str().unwrap().to_string();

    let b64 = base64::engine::general_purpose::STANDARD;
    let mut settings = common::test_settings(&old_app.db_url);
    settings.security.master_key = Secret::new(b64.encode([7u8; 32]));
    settings.security.previous_master_keys = old_app.state.settings.security.master_key.clone();
    let new_app = TestApp::spawn_on(settings).await;
    ping(&new_app, &key, &id).await;
    let vault = new_app.state.settings.vault().unwrap();
    let report = postline::secrets::rotate(&mut new_app.sql_conn(), &vault).unwrap();
    let hooks = report
        .iter()
        .find(|(n, _)| *n == "webhooks.secret")
        .unwrap();
    assert_eq!(hooks.1.rotated, 1);
    ping(&new_app, &key, &id).await;
    let got = rx.received();
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|h| h.verified),
        "the same secret signs after rotation"
    );
    // The old key alone no longer opens the secret.
    let err = old_app
        .post(&format!("/v1/webhooks/{id}/test"), &key, json!({}))
        .await;
    assert_eq!(err.status, 500, "{}", err.text);
    assert!(!err.text.contains("whsec_"));

    // The CLI (`postline secrets rotate`, the real binary) finds nothing left
    // to do, and says so per column.
    let new_key = b64.encode([7u8; 32]);
    let old_key = old_app
        .state
        .settings
        .security
        .master_key
        .expose()
        .to_string();
    let server = crate::drills::Server::new(
        &old_app.db_url,
        1,
        &[
            ("POSTLINE__SECURITY__MASTER_KEY", new_key.as_str()),
            ("POSTLINE__SECURITY__PREVIOUS_MASTER_KEYS", old_key.as_str()),
        ],
    );
    let out = server.cli(&["secrets", "rotate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("webhooks.secret: 0 re-encrypted, 1 already current"),
        "{stdout}"
    );
}

async fn ping(app: &TestApp, key: &str, id: &str) {
    let r = app
        .post(&format!("/v1/webhooks/{id}/test"), key, json!({}))
        .await;
    assert_eq!(r.json["status"], "succeeded", "{}", r.text);
}

/// A domain's DKIM private key is re-sealed too: afterwards the new key
/// alone opens it, the old one does not.
#[tokio::test]
async fn rotate_reseals_dkim_private_keys() {
    let old_app = TestApp::spawn().await;
    let t = old_app.create_tenant(json!({"name": "D"})).await;
    let key = old_app
        .tenant_key(t["id"].as_str().unwrap(), &["domains:write"])
        .await;
    let r = old_app
        .post("/v1/domains", &key, json!({"name": "rotate.example"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let b64 = base64::engine::general_purpose::STANDARD;
    let new_key = [9u8; 32];
    let mut settings = common::test_settings(&old_app.db_url);
    settings.security.master_key = Secret::new(b64.encode(new_key));
    settings.security.previous_master_keys = old_app.state.settings.security.master_key.clone();
    let new_app = TestApp::spawn_on(settings).await;
    let vault = new_app.state.settings.vault().unwrap();
    let mut conn = new_app.sql_conn();
    let report = postline::secrets::rotate(&mut conn, &vault).unwrap();
    let dkim = report
        .iter()
        .find(|(n, _)| *n == "domain_dkim_keys.private_key_enc")
        .unwrap();
    assert!(dkim.1.rotated >= 1, "{:?}", dkim.1);

    #[derive(diesel::QueryableByName)]
    struct Sealed {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: uuid::Uuid,
        #[diesel(sql_type = diesel::sql_types::Bytea)]
        private_key_enc: Vec<u8>,
    }
    use diesel::RunQueryDsl;
    let rows: Vec<Sealed> = diesel::sql_query("SELECT id, private_key_enc FROM domain_dkim_keys")
        .load(&mut conn)
        .unwrap();
    assert_eq!(rows.len(), dkim.1.rotated);
    let new_only = Vault::new(&new_key);
    for row in rows {
        let ctx = postline::domains::keys::private_key_context(row.id);
        assert!(new_only.open(&row.private_key_enc, &ctx).is_ok());
        assert!(old_app
            .state
            .vault
            .open(&row.private_key_enc, &ctx)
            .is_err());
    }
}
