//! Tenant CRUD against the real app and a real Postgres.

use crate::common;

use common::TestApp;
use diesel::prelude::*;
use serde_json::json;

#[tokio::test]
async fn create_get_list_update_delete() {
    let app = TestApp::spawn().await;
    let k = app.admin_key.clone();
    let t = app
        .create_tenant(json!({
            "name": "Acme Corp", "external_id": "acme-corp", "domain": "Acme.com",
            "settings": {"from_name": "Acme", "reply_to": "support@acme.com"},
            "rate_limit": {"requests_per_minute": 200, "emails_per_day": 10000, "emails_per_second": 10}
        }))
        .await;
    let id = t["id"].as_str().unwrap().to_string();
    assert_eq!(t["name"], "Acme Corp");
    assert_eq!(t["domain"], "acme.com");
    assert_eq!(t["status"], "active");
    assert_eq!(t["smtp"], serde_json::Value::Null);
    assert_eq!(t["settings"]["from_name"], "Acme");
    assert_eq!(t["rate_limit"]["emails_per_day"], 10000);

    // by id and by external_id
    let by_id = app.get(&format!("/v1/tenants/{id}"), &k).await;
    assert_eq!(by_id.status, 200);
    let by_ext = app.get("/v1/tenants/acme-corp", &k).await;
    assert_eq!(by_ext.json["id"], id.as_str());

    // partial update with PATCH: only given fields change
    let r = app
        .patch(
            &format!("/v1/tenants/{id}"),
            &k,
            json!({"name": "Acme Inc", "settings": {"from_name": null}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["name"], "Acme Inc");
    assert_eq!(r.json["domain"], "acme.com");
    assert_eq!(r.json["external_id"], "acme-corp");
    assert_eq!(r.json["settings"]["reply_to"], "support@acme.com");
    assert!(r.json["settings"].get("from_name").is_none());
    assert_eq!(r.json["rate_limit"]["requests_per_minute"], 200);

    // PUT behaves the same (partial)
    let r = app
        .put(
            &format!("/v1/tenants/{id}"),
            &k,
            json!({"rate_limit": {"emails_per_day": null}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json["rate_limit"]["emails_per_day"],
        serde_json::Value::Null
    );
    assert_eq!(r.json["rate_limit"]["emails_per_second"], 10);
    assert_eq!(r.json["name"], "Acme Inc");

    // list with cursor pagination, newest first
    for i in 0..4 {
        app.create_tenant(json!({"name": format!("T{i}")})).await;
    }
    let p1 = app.get("/v1/tenants?limit=2", &k).await;
    assert_eq!(p1.status, 200);
    assert_eq!(p1.json["data"].as_array().unwrap().len(), 2);
    assert_eq!(p1.json["data"][0]["name"], "T3");
    let cursor = p1.json["next_cursor"].as_str().unwrap();
    let p2 = app
        .get(&format!("/v1/tenants?limit=2&cursor={cursor}"), &k)
        .await;
    assert_eq!(p2.json["data"][0]["name"], "T1");
    let cursor = p2.json["next_cursor"].as_str().unwrap();
    let p3 = app
        .get(&format!("/v1/tenants?limit=2&cursor={cursor}"), &k)
        .await;
    assert_eq!(p3.json["data"].as_array().unwrap().len(), 1);
    assert_eq!(p3.json["next_cursor"], serde_json::Value::Null);

    // delete: gone from get and list, external_id free again
    let r = app.delete(&format!("/v1/tenants/{id}"), &k).await;
    assert_eq!(r.status, 204);
    assert_eq!(app.get(&format!("/v1/tenants/{id}"), &k).await.status, 404);
    assert_eq!(
        app.delete(&format!("/v1/tenants/{id}"), &k).await.status,
        404
    );
    let all = app.get("/v1/tenants?limit=100", &k).await;
    assert!(all.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["id"] != id.as_str()));
    app.create_tenant(json!({"name": "Acme again", "external_id": "acme-corp"}))
        .await;
}

#[tokio::test]
async fn external_id_conflict_and_validation() {
    let app = TestApp::spawn().await;
    let k = app.admin_key.clone();
    app.create_tenant(json!({"name": "A", "external_id": "clinic-001"}))
        .await;
    let r = app
        .post(
            "/v1/tenants",
            &k,
            json!({"name": "B", "external_id": "clinic-001"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.json["code"], "conflict");

    for bad in [
        json!({"name": ""}),
        json!({"name": "x", "external_id": "Has Spaces"}),
        json!({"name": "x", "external_id": "6f1e1a3c-1f0b-4c1e-9c66-4f5b2a0f9b11"}),
        json!({"name": "x", "domain": "not a domain"}),
        json!({"name": "x", "settings": {"reply_to": "nope"}}),
        json!({"name": "x", "settings": {"from_name": "A\r\nBcc: x@y.z"}}),
        json!({"name": "x", "rate_limit": {"emails_per_day": 0}}),
        json!({"name": "x", "smtp": {"port": 25}}),
        json!({"name": "x", "smtp": {"host": "smtp.acme.com", "tls": "ssl3"}}),
        json!({"name": "x", "smtp": {"host": "smtp.acme.com", "port": 70000}}),
        json!({"name": 5}),
        json!({"nme": "typo"}),
    ] {
        let r = app.post("/v1/tenants", &k, bad.clone()).await;
        assert_eq!(r.status, 422, "{bad} -> {}", r.text);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/problem+json")
        );
    }
    let list = app.get("/v1/tenants", &k).await;
    assert_eq!(
        list.json["data"].as_array().unwrap().len(),
        1,
        "bad input changed nothing"
    );
}

#[tokio::test]
async fn smtp_password_is_never_returned_nor_stored_in_plaintext() {
    let app = TestApp::spawn().await;
    let k = app.admin_key.clone();
    let password = "S3cret-Relay-Passw0rd";
    let t = app
        .create_tenant(json!({"name": "Relay", "smtp": {
            "host": "smtp.relay.example", "port": 587, "username": "relay-user",
            "password": password, "tls": "starttls"}}))
        .await;
    let id = t["id"].as_str().unwrap().to_string();
    assert_eq!(t["smtp"]["password_set"], true);
    assert_eq!(t["smtp"]["username"], "relay-user");
    assert!(!t.to_string().contains(password));

    for r in [
        app.get(&format!("/v1/tenants/{id}"), &k).await,
        app.get("/v1/tenants", &k).await,
        app.patch(
            &format!("/v1/tenants/{id}"),
            &k,
            json!({"smtp": {"port": 2525}}),
        )
        .await,
    ] {
        assert_eq!(r.status, 200);
        assert!(!r.text.contains(password), "{}", r.text);
        assert!(r.text.contains("\"password_set\":true"));
    }

    // raw column: ciphertext, not the password
    let mut conn = app.sql_conn();
    use postline::db::schema::tenants::dsl;
    let stored: Option<Vec<u8>> = dsl::tenants
        .filter(dsl::id.eq(uuid::Uuid::parse_str(&id).unwrap()))
        .select(dsl::smtp_password_enc)
        .first(&mut conn)
        .unwrap();
    let stored = stored.expect("password stored");
    assert!(!stored
        .windows(password.len())
        .any(|w| w == password.as_bytes()));
    let opened = app
        .state
        .vault
        .open(
            &stored,
            &postline::tenants::input::smtp_password_context(uuid::Uuid::parse_str(&id).unwrap()),
        )
        .unwrap();
    assert_eq!(opened.as_slice(), password.as_bytes());

    // "smtp": null removes the override
    let r = app
        .patch(&format!("/v1/tenants/{id}"), &k, json!({"smtp": null}))
        .await;
    assert_eq!(r.json["smtp"], serde_json::Value::Null);
}
