//! Finding 10: the audit log. Every admin and key-management action leaves
//! one entry with its actor and request id, in the transaction of the change;
//! secrets never appear; tenant keys read only their own tenant's entries.

use crate::common;

use common::TestApp;
use diesel::prelude::*;
use serde_json::{json, Value};

async fn log(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/audit-log?limit=100{query}"), key)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["data"].as_array().unwrap().clone()
}

fn actions(entries: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    v.reverse(); // oldest first
    v
}

async fn admin_key_id(app: &TestApp) -> String {
    let prefix = app.admin_key.rsplit_once('_').unwrap().0.to_string();
    let keys = app.get("/v1/admin-keys", &app.admin_key).await;
    keys.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == prefix.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn every_action_is_logged_with_its_actor_and_request_id_and_no_secret() {
    let app = TestApp::spawn().await;
    let admin_id = admin_key_id(&app).await;
    let created = app
        .post(
            "/v1/tenants",
            &app.admin_key,
            json!({"name": "Acme", "external_id": "acme"}),
        )
        .await;
    assert_eq!(created.status, 201);
    let request_id = created.header("x-request-id").unwrap();
    let tid = created.json["id"].as_str().unwrap().to_string();
    let tpath = format!("/v1/tenants/{tid}");
    let password = "Audit-Never-Shows-This";
    let r = app
        .patch(
            &tpath,
            &app.admin_key,
            json!({"name": "Acme Inc",
            "smtp": {"host": "smtp.acme.example", "username": "u", "password": password}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let key = app
        .tenant_key(&tid, &["webhooks:write", "audit:read"])
        .await;
    let keys = app.get(&format!("{tpath}/api-keys"), &app.admin_key).await;
    let key_id = keys.json["data"][0]["id"].as_str().unwrap().to_string();
    let hook = app
        .post(
            "/v1/webhooks",
            &key,
            json!({"url": "http://127.0.0.1:9/h", "events": ["*"]}),
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.text);
    let whsec = hook.json["secret"].as_str().unwrap().to_string();
    let hid = hook.json["id"].as_str().unwrap().to_string();
    let r = app
        .patch(
            &format!("/v1/webhooks/{hid}"),
            &key,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        app.delete(&format!("/v1/webhooks/{hid}"), &key)
            .await
            .status,
        204
    );
    let r = app
        .post(
            "/v1/admin-keys",
            &app.admin_key,
            json!({"name": "billing", "permissions": ["usage:read"]}),
        )
        .await;
    assert_eq!(r.status, 201);
    let admin2 = r.json["key"].as_str().unwrap().to_string();
    let r = app
        .delete(&format!("{tpath}/api-keys/{key_id}"), &app.admin_key)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        app.patch(&tpath, &app.admin_key, json!({"status": "suspended"}))
            .await
            .status,
        200
    );
    assert_eq!(
        app.patch(&tpath, &app.admin_key, json!({"status": "active"}))
            .await
            .status,
        200
    );
    assert_eq!(app.delete(&tpath, &app.admin_key).await.status, 204);

    let all = log(&app, &app.admin_key, "").await;
    assert_eq!(
        actions(&all),
        [
            "key.created", // the bootstrap admin key (CLI)
            "tenant.created",
            "tenant.updated",
            "key.created",
            "webhook.created",
            "webhook.updated",
            "webhook.deleted",
            "key.created",
            "key.revoked",
            "tenant.suspended",
            "tenant.reactivated",
            "tenant.deleted",
        ]
    );
    let by =
        |action: &str| -> Vec<&Value> { all.iter().filter(|e| e["action"] == action).collect() };
    let bootstrap = *by("key.created").last().unwrap();
    assert_eq!(bootstrap["actor"], json!({"kind": "cli", "id": null}));
    assert!(bootstrap["tenant_id"].is_null());
    let t_created = by("tenant.created")[0];
    assert_eq!(
        t_created["actor"],
        json!({"kind": "admin_key", "id": admin_id})
    );
    assert_eq!(t_created["request_id"], request_id.as_str());
    assert_eq!(t_created["tenant_id"], tid.as_str());
    assert_eq!(t_created["target_id"], tid.as_str());
    let updated = by("tenant.updated")[0];
    assert_eq!(
        updated["changes"]["name"],
        json!({"from": "Acme", "to": "Acme Inc"})
    );
    assert_eq!(
        updated["changes"]["smtp_password"],
        json!({"password_set": true})
    );
    let w = by("webhook.created")[0];
    assert_eq!(w["actor"], json!({"kind": "tenant_key", "id": key_id}));
    assert_eq!(w["tenant_id"], tid.as_str());
    assert_eq!(
        by("webhook.updated")[0]["changes"]["enabled"],
        json!({"from": true, "to": false})
    );
    assert_eq!(by("key.revoked")[0]["target_id"], key_id.as_str());
    assert!(
        by("key.created")[0]["tenant_id"].is_null(),
        "an admin key is a platform entry"
    );
    let text = serde_json::to_string(&all).unwrap();
    for secret in [password, &key, &whsec, &admin2, &app.admin_key] {
        assert!(!text.contains(secret), "a secret in the audit log");
    }
}

#[tokio::test]
async fn a_change_and_its_entry_commit_or_fail_together() {
    let app = TestApp::spawn().await;
    let t = app
        .create_tenant(json!({"name": "A", "external_id": "a"}))
        .await;
    let tpath = format!("/v1/tenants/{}", t["id"].as_str().unwrap());
    let before = log(&app, &app.admin_key, "").await.len();
    // A change that fails inside its transaction (unique violation) writes no entry.
    let dup = app
        .post(
            "/v1/tenants",
            &app.admin_key,
            json!({"name": "B", "external_id": "a"}),
        )
        .await;
    assert_eq!(dup.status, 409);
    assert_eq!(
        app.patch(&tpath, &app.admin_key, json!({"name": ""}))
            .await
            .status,
        422
    );
    assert_eq!(log(&app, &app.admin_key, "").await.len(), before);
    // An entry that cannot be written takes its change down with it.
    let mut conn = app.sql_conn();
    diesel::sql_query(
        "CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'audit down'; END $$",
    )
    .execute(&mut conn)
    .unwrap();
    diesel::sql_query(
        // The tenant's entries are written to tenant_audit_log (the
        // `audit_log` view reads it and the platform's).
        "CREATE TRIGGER audit_down BEFORE INSERT ON tenant_audit_log \
         FOR EACH ROW EXECUTE FUNCTION audit_down()",
    )
    .execute(&mut conn)
    .unwrap();
    let r = app
        .patch(&tpath, &app.admin_key, json!({"name": "Renamed"}))
        .await;
    assert_eq!(r.status, 500, "{}", r.text);
    let r = app.delete(&tpath, &app.admin_key).await;
    assert_eq!(r.status, 500, "{}", r.text);
    let r = app.get(&tpath, &app.admin_key).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["name"], "A", "the rename rolled back with its entry");
    assert_eq!(r.json["status"], "active", "so did the deletion");
}

#[tokio::test]
async fn tenant_scoped_reads_filters_and_pagination() {
    let app = TestApp::spawn().await;
    let mut tenants = Vec::new();
    for name in ["A", "B"] {
        let t = app.create_tenant(json!({"name": name})).await;
        let id = t["id"].as_str().unwrap().to_string();
        let key = app.tenant_key(&id, &["webhooks:write", "audit:read"]).await;
        for i in 0..3 {
            let r = app
                .post(
                    "/v1/webhooks",
                    &key,
                    json!({"url": format!("http://127.0.0.1:9/{i}"), "events": ["*"]}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
        }
        tenants.push((id, key));
    }
    let (a, key_a) = &tenants[0];
    let (b, _) = &tenants[1];
    let own = log(&app, key_a, "").await;
    assert_eq!(
        own.len(),
        5,
        "tenant.created, key.created, 3 × webhook.created"
    );
    assert!(own.iter().all(|e| e["tenant_id"] == a.as_str()));
    assert!(log(&app, key_a, &format!("&tenant_id={b}"))
        .await
        .is_empty());
    let no_perm = app.tenant_key(a, &["webhooks:write"]).await;
    let r = app.get("/v1/audit-log", &no_perm).await;
    assert_eq!(r.status, 403, "{}", r.text);

    let admin = &app.admin_key;
    let hooks = log(&app, admin, "&action=webhook.created").await;
    assert_eq!(hooks.len(), 6);
    assert_eq!(
        log(
            &app,
            admin,
            &format!("&action=webhook.created&tenant_id={b}")
        )
        .await
        .len(),
        3
    );
    assert!(log(&app, admin, "&actor=tenant_key")
        .await
        .iter()
        .all(|e| e["actor"]["kind"] == "tenant_key"));
    assert_eq!(log(&app, admin, "&actor=tenant_key").await.len(), 6);
    assert_eq!(log(&app, admin, "&actor=cli").await.len(), 1);
    let actor_id = hooks[0]["actor"]["id"].as_str().unwrap();
    assert_eq!(
        log(&app, admin, &format!("&actor=tenant_key:{actor_id}"))
            .await
            .len(),
        3
    );
    assert!(log(&app, admin, "&from=2999-01-01T00:00:00Z")
        .await
        .is_empty());
    assert!(log(&app, admin, "&to=2000-01-01T00:00:00Z")
        .await
        .is_empty());
    let total = log(&app, admin, "").await;
    assert_eq!(total.len(), 1 + 2 * 5 + 1, "and the key without audit:read");

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/audit-log?limit=4&cursor={c}"),
            None => "/v1/audit-log?limit=4".to_string(),
        };
        let r = app.get(&q, admin).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.json["data"].as_array().unwrap();
        assert!(page.len() <= 4);
        seen.extend(page.iter().map(|e| e["id"].clone()));
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let ids: Vec<Value> = total.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(seen, ids, "pages in order, none missing or repeated");

    for bad in [
        "actor=root",
        "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "limit=101",
        "bogus=1",
    ] {
        let r = app.get(&format!("/v1/audit-log?{bad}"), admin).await;
        assert!(
            r.status == 400 || r.status == 422,
            "{bad}: {} {}",
            r.status,
            r.text
        );
    }
}

/// A tenant auto-created by a platform-style send is audited like any other,
/// with the sending admin key as its actor.
#[tokio::test]
async fn an_auto_created_tenant_is_audited() {
    let app = TestApp::spawn_with(|s| s.tenants.auto_create = true).await;
    let admin_id = admin_key_id(&app).await;
    let r = app
        .post(
            "/v1/emails",
            &app.admin_key,
            json!({"tenant_id": "clinic-new", "from": "a@c.example", "to": "p@example.com", "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let created = log(&app, &app.admin_key, "&action=tenant.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0]["actor"],
        json!({"kind": "admin_key", "id": admin_id})
    );
    assert_eq!(created[0]["changes"]["external_id"], "clinic-new");
    // A second send finds the tenant: no second entry.
    let r = app
        .post(
            "/v1/emails",
            &app.admin_key,
            json!({"tenant_id": "clinic-new", "from": "a@c.example", "to": "p@example.com", "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(
        log(&app, &app.admin_key, "&action=tenant.created")
            .await
            .len(),
        1
    );
}
