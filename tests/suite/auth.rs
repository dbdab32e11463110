//! Keys and authentication: lifecycle, the 401/403/404 contract, isolation.

use crate::common;

use common::TestApp;
use serde_json::json;

#[tokio::test]
async fn key_lifecycle_shown_once_listed_without_secret_revoked() {
    let app = TestApp::spawn().await;
    let k = app.admin_key.clone();
    let t = app.create_tenant(json!({"name": "A"})).await;
    let tid = t["id"].as_str().unwrap();

    let r = app
        .post(
            &format!("/v1/tenants/{tid}/api-keys"),
            &k,
            json!({"name": "Production"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let key = r.json["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("pl_live_"));
    assert_eq!(r.json["permissions"], json!(["send"]));
    assert!(key.starts_with(r.json["prefix"].as_str().unwrap()));
    let key_row_id = r.json["id"].as_str().unwrap().to_string();

    // the key works (a tenant route it may call: none yet beyond auth, so use
    // an admin route and expect 403 admin_only, which proves authentication)
    let r = app.get("/v1/tenants", &key).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json["code"], "admin_only");

    let list = app.get(&format!("/v1/tenants/{tid}/api-keys"), &k).await;
    assert_eq!(list.status, 200);
    let entry = &list.json["data"][0];
    assert!(entry.get("key").is_none());
    assert!(!list.text.contains(&key));
    assert_eq!(entry["revoked_at"], serde_json::Value::Null);

    let r = app
        .delete(&format!("/v1/tenants/{tid}/api-keys/{key_row_id}"), &k)
        .await;
    assert_eq!(r.status, 204);
    let r = app.get("/v1/tenants", &key).await;
    assert_eq!(r.status, 401, "revoked key rejected at once on this node");
    let list = app.get(&format!("/v1/tenants/{tid}/api-keys"), &k).await;
    assert!(list.json["data"][0]["revoked_at"].is_string());
}

#[tokio::test]
async fn every_401_is_identical() {
    let app = TestApp::spawn().await;
    let k = app.admin_key.clone();
    let t = app.create_tenant(json!({"name": "A"})).await;
    let tid = t["id"].as_str().unwrap();

    // expired key: created with a near expiry, then wait past it
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let r = app
        .post(
            &format!("/v1/tenants/{tid}/api-keys"),
            &k,
            json!({"name": "short", "expires_at": soon}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let expiring = r.json["key"].as_str().unwrap().to_string();
    assert_eq!(app.get("/v1/tenants", &expiring).await.status, 403);

    let revoked = app.tenant_key(tid, &["send"]).await;
    let list = app.get(&format!("/v1/tenants/{tid}/api-keys"), &k).await;
    let rid = list.json["data"][0]["id"].as_str().unwrap().to_string();
    app.delete(&format!("/v1/tenants/{tid}/api-keys/{rid}"), &k)
        .await;

    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;

    let prefix: String = k.rsplit_once('_').unwrap().0.to_string();
    let wrong_secret = format!("{prefix}_{}", "A".repeat(32));
    let unknown = format!("pl_admin_{}_{}", "z".repeat(16), "B".repeat(32));
    // No key, or a header in another scheme: the 401 says how to send one.
    for (auth, says) in [
        (None, "No API key was sent"),
        (Some("Bearer".to_string()), "No API key was sent"),
        (Some("Basic dXNlcjpwYXNz".to_string()), "Bearer scheme"),
        (Some(k.clone()), "Bearer scheme"),
    ] {
        let mut req = app.client.get(format!("{}/v1/tenants", app.address));
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let r = TestApp::read(req.send().await.unwrap()).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.json["code"], "unauthorized");
        assert!(
            r.json["detail"].as_str().unwrap().contains(says),
            "{}",
            r.text
        );
        assert!(!r.text.contains(&k[10..]), "the key is never echoed");
    }
    // Every failure of a key that was sent: one body, whatever the reason.
    let mut bodies = Vec::new();
    for auth in [
        Some("Bearer not-a-key".to_string()),
        Some(format!("Bearer {unknown}")),
        Some(format!("Bearer {wrong_secret}")),
        Some(format!("Bearer {expiring}")),
        Some(format!("Bearer {revoked}")),
    ] {
        let mut req = app.client.get(format!("{}/v1/tenants", app.address));
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let r = TestApp::read(req.send().await.unwrap()).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/problem+json")
        );
        bodies.push(r.text);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:#?}");
}

#[tokio::test]
async fn permissions_and_admin_only() {
    let app = TestApp::spawn().await;
    let k = app.admin_key.clone();
    let t = app.create_tenant(json!({"name": "A"})).await;
    let tid = t["id"].as_str().unwrap();

    // tenant key on admin routes -> 403 admin_only
    let tk = app.tenant_key(tid, &["send", "usage:read"]).await;
    for (m, p) in [
        ("GET", "/v1/tenants".to_string()),
        ("POST", "/v1/admin-keys".to_string()),
        ("GET", format!("/v1/tenants/{tid}")),
        ("DELETE", format!("/v1/tenants/{tid}")),
    ] {
        let body = (m == "POST").then(|| json!({"name": "x"}));
        let r = app.request(m, &p, Some(&tk), body).await;
        assert_eq!(r.status, 403, "{m} {p}");
        assert_eq!(r.json["code"], "admin_only");
    }

    // restricted admin key (billing: usage:read only) -> 403 insufficient_permission elsewhere
    let r = app
        .post(
            "/v1/admin-keys",
            &k,
            json!({"name": "billing", "permissions": ["usage:read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let billing = r.json["key"].as_str().unwrap().to_string();
    assert!(billing.starts_with("pl_admin_"));
    for (m, p) in [
        ("GET", "/v1/tenants"),
        ("POST", "/v1/tenants"),
        ("GET", "/v1/admin-keys"),
    ] {
        let body = (m == "POST").then(|| json!({"name": "x"}));
        let r = app.request(m, p, Some(&billing), body).await;
        assert_eq!(r.status, 403, "{m} {p}: {}", r.text);
        assert_eq!(r.json["code"], "insufficient_permission");
    }

    // a key can never grant more than it has
    let r = app
        .post(
            "/v1/admin-keys",
            &k,
            json!({"name": "ops", "permissions": ["keys:write", "tenants:read"]}),
        )
        .await;
    let ops = r.json["key"].as_str().unwrap().to_string();
    let r = app
        .post(
            "/v1/admin-keys",
            &ops,
            json!({"name": "escalate", "permissions": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = app
        .post(
            &format!("/v1/tenants/{tid}/api-keys"),
            &ops,
            json!({"name": "x", "permissions": ["send"]}),
        )
        .await;
    assert_eq!(r.status, 403, "ops lacks send, so cannot grant it");
    let r = app
        .post(
            "/v1/admin-keys",
            &ops,
            json!({"name": "narrow", "permissions": ["tenants:read"]}),
        )
        .await;
    assert_eq!(r.status, 201);

    // admin permissions are refused on tenant keys; unknown permissions are 422
    let r = app
        .post(
            &format!("/v1/tenants/{tid}/api-keys"),
            &k,
            json!({"name": "x", "permissions": ["tenants:write"]}),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = app
        .post(
            &format!("/v1/tenants/{tid}/api-keys"),
            &k,
            json!({"name": "x", "permissions": ["root"]}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json["errors"][0]["field"], "permissions[0]");

    // admin keys: list and revoke
    let list = app.get("/v1/admin-keys", &k).await;
    assert_eq!(list.status, 200);
    assert!(!list.text.contains(&billing));
    let bid = list.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "billing")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.delete(&format!("/v1/admin-keys/{bid}"), &k)
            .await
            .status,
        204
    );
    assert_eq!(app.get("/v1/tenants", &billing).await.status, 401);
}

#[tokio::test]
async fn foreign_and_missing_resources_are_identical_404s() {
    let app = TestApp::spawn().await;
    let k = app.admin_key.clone();
    let a = app.create_tenant(json!({"name": "A"})).await;
    let b = app.create_tenant(json!({"name": "B"})).await;
    let (aid, bid) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let r = app
        .post(
            &format!("/v1/tenants/{bid}/api-keys"),
            &k,
            json!({"name": "b"}),
        )
        .await;
    let b_key_id = r.json["id"].as_str().unwrap().to_string();

    // B's key addressed through tenant A vs a key id that does not exist
    let foreign = app
        .delete(&format!("/v1/tenants/{aid}/api-keys/{b_key_id}"), &k)
        .await;
    let missing = app
        .delete(
            &format!("/v1/tenants/{aid}/api-keys/{}", uuid::Uuid::new_v4()),
            &k,
        )
        .await;
    let garbage = app
        .delete(&format!("/v1/tenants/{aid}/api-keys/not-a-uuid"), &k)
        .await;
    assert_eq!(foreign.status, 404);
    assert_eq!(foreign.text, missing.text);
    assert_eq!(foreign.text, garbage.text);
    // an admin key id through the tenant route is also not found
    let admins = app.get("/v1/admin-keys", &k).await;
    let admin_id = admins.json["data"][0]["id"].as_str().unwrap();
    let r = app
        .delete(&format!("/v1/tenants/{aid}/api-keys/{admin_id}"), &k)
        .await;
    assert_eq!(r.text, missing.text);
    // B's key still works after the failed attempts
    let list = app.get(&format!("/v1/tenants/{bid}/api-keys"), &k).await;
    assert_eq!(list.json["data"][0]["revoked_at"], serde_json::Value::Null);
    let unknown_tenant = app
        .get(&format!("/v1/tenants/{}", uuid::Uuid::new_v4()), &k)
        .await;
    assert_eq!(unknown_tenant.status, 404);
    assert_eq!(unknown_tenant.text, missing.text);
}

#[tokio::test]
async fn suspended_tenant_gets_403_and_deleted_tenant_keys_401() {
    let app = TestApp::spawn().await;
    let k = app.admin_key.clone();
    let t = app.create_tenant(json!({"name": "A"})).await;
    let tid = t["id"].as_str().unwrap();
    let tk = app.tenant_key(tid, &["send"]).await;
    // warm the cache so suspension must invalidate it
    assert_eq!(app.get("/v1/tenants", &tk).await.json["code"], "admin_only");

    let r = app
        .patch(
            &format!("/v1/tenants/{tid}"),
            &k,
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(r.json["status"], "suspended");
    let r = app.get("/v1/tenants", &tk).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json["code"], "tenant_suspended");

    app.patch(
        &format!("/v1/tenants/{tid}"),
        &k,
        json!({"status": "active"}),
    )
    .await;
    assert_eq!(app.get("/v1/tenants", &tk).await.json["code"], "admin_only");

    app.delete(&format!("/v1/tenants/{tid}"), &k).await;
    assert_eq!(app.get("/v1/tenants", &tk).await.status, 401);
}

#[tokio::test]
async fn revocation_reaches_another_node_within_the_ttl() {
    let node_a = TestApp::spawn().await;
    let mut settings = common::test_settings(&node_a.db_url);
    settings.auth.cache_ttl_secs = 1;
    let node_b = TestApp::spawn_on(settings).await;
    let k = node_a.admin_key.clone();
    let t = node_a.create_tenant(json!({"name": "A"})).await;
    let tid = t["id"].as_str().unwrap();
    let r = node_a
        .post(
            &format!("/v1/tenants/{tid}/api-keys"),
            &k,
            json!({"name": "x"}),
        )
        .await;
    let (tk, kid) = (
        r.json["key"].as_str().unwrap().to_string(),
        r.json["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(
        node_b.get("/v1/tenants", &tk).await.status,
        403,
        "cached on node B"
    );
    node_a
        .delete(&format!("/v1/tenants/{tid}/api-keys/{kid}"), &k)
        .await;
    assert_eq!(node_a.get("/v1/tenants", &tk).await.status, 401);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        node_b.get("/v1/tenants", &tk).await.status,
        401,
        "node B after its TTL"
    );
}

#[tokio::test]
async fn last_used_at_is_flushed_without_a_write_per_request() {
    let app = TestApp::spawn().await;
    let k = app.admin_key.clone();
    let t = app.create_tenant(json!({"name": "A"})).await;
    let tid = t["id"].as_str().unwrap();
    let tk = app.tenant_key(tid, &["send"]).await;
    for _ in 0..5 {
        app.get("/v1/tenants", &tk).await;
    }
    let list = app.get(&format!("/v1/tenants/{tid}/api-keys"), &k).await;
    assert_eq!(
        list.json["data"][0]["last_used_at"],
        serde_json::Value::Null,
        "not written per request"
    );
    let written = app.state.auth.flush_last_used().await.unwrap();
    assert!(written >= 1);
    let list = app.get(&format!("/v1/tenants/{tid}/api-keys"), &k).await;
    assert!(list.json["data"][0]["last_used_at"].is_string());
}

#[tokio::test]
async fn a_flood_of_wrong_secrets_is_refused_while_cached_keys_keep_working() {
    let app = TestApp::spawn().await;
    let k = app.admin_key.clone();
    assert_eq!(
        app.get("/v1/tenants", &k).await.status,
        200,
        "warm the cache"
    );
    let prefix = k.rsplit_once('_').unwrap().0.to_string();
    // every attempt is a new token for a real key id: each needs argon2, and
    // they queue on the verifier's permits
    let wrong = (0..8).map(|i| {
        let token = format!("{prefix}_{}{}", "W".repeat(31), char::from(b'a' + i));
        let app = &app;
        async move { app.get("/v1/tenants", &token).await.status }
    });
    let good = (0..8).map(|_| {
        let (app, k) = (&app, k.clone());
        async move { app.get("/v1/tenants", &k).await.status }
    });
    let (wrong, good) = tokio::join!(
        futures_util::future::join_all(wrong),
        futures_util::future::join_all(good)
    );
    assert!(wrong.iter().all(|s| *s == 401), "{wrong:?}");
    assert!(good.iter().all(|s| *s == 200), "{good:?}");
}
