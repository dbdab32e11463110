//! Issue 22, finding 12: domains, suppressions and templates changes are in
//! the audit log (API.md "Audit log"), each written in the transaction of
//! its change with the actor that made it: the tenant key or admin key of
//! the request, and `system` for the recheck job verifying a domain. A
//! change that is refused leaves no entry.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::dns_server::DnsServer;
use crate::common::TestApp;
use crate::domains::{app_on, publish_all};

async fn entries(app: &TestApp, key: &str, action: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/audit-log?limit=100&action={action}"), key)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut v = r.json["data"].as_array().unwrap().clone();
    v.reverse(); // oldest first
    v
}

fn actor(e: &Value) -> (&str, bool) {
    (
        e["actor"]["kind"].as_str().unwrap(),
        e["actor"]["id"].is_string(),
    )
}

#[tokio::test]
async fn domain_suppression_and_template_changes_are_audited_with_their_actor() {
    let dns = DnsServer::start().await;
    let mut app = app_on(&dns, |s| s.domains.recheck_secs = 1).await;
    app.start_worker();
    let t = app.create_tenant(json!({"name": "Audited"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let key = app
        .tenant_key(
            &t,
            &[
                "domains:read",
                "domains:write",
                "suppressions:write",
                "templates:write",
                "templates:read",
                "audit:read",
            ],
        )
        .await;

    // Domains: created and verified by the key, one verified by the
    // recheck (system), a rotation by an admin key, a deletion.
    let a = app
        .post("/v1/domains", &key, json!({"name": "a.test"}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let a_id = a.json["id"].as_str().unwrap().to_string();
    publish_all(&dns, &a.json);
    let v = app.post("/v1/domains/a.test/verify", &key, json!({})).await;
    assert_eq!(v.json["status"], "verified", "{}", v.text);
    let b = app
        .post("/v1/domains", &key, json!({"name": "b.test"}))
        .await;
    assert_eq!(b.status, 201, "{}", b.text);
    let b_id = b.json["id"].as_str().unwrap().to_string();
    publish_all(&dns, &b.json);
    let start = Instant::now();
    while app.get("/v1/domains/b.test", &key).await.json["status"] != "verified" {
        assert!(start.elapsed() < Duration::from_secs(30), "never rechecked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = app
        .post(
            &format!("/v1/tenants/{t}/domains/b.test/dkim/rotate"),
            &app.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.delete("/v1/domains/a.test", &key).await.status, 204);
    // A refused change leaves nothing: a second delete is a 404.
    assert_eq!(app.delete("/v1/domains/a.test", &key).await.status, 404);

    let created = entries(&app, &key, "domain.created").await;
    assert_eq!(created.len(), 2, "{created:?}");
    assert_eq!(created[0]["target_id"], a_id.as_str());
    assert_eq!(created[0]["tenant_id"], t.as_str());
    assert_eq!(created[0]["changes"]["name"], "a.test");
    assert_eq!(actor(&created[0]), ("tenant_key", true));
    assert!(created[0]["request_id"].is_string(), "{:?}", created[0]);
    let verified = entries(&app, &key, "domain.verified").await;
    assert_eq!(verified.len(), 2, "{verified:?}");
    assert_eq!(
        (verified[0]["target_id"].as_str(), actor(&verified[0])),
        (Some(a_id.as_str()), ("tenant_key", true))
    );
    assert_eq!(
        (verified[1]["target_id"].as_str(), actor(&verified[1])),
        (Some(b_id.as_str()), ("system", false))
    );
    assert_eq!(
        verified[1]["changes"]["status"],
        json!({"from": "pending", "to": "verified"})
    );
    let rotated = entries(&app, &key, "domain.dkim_rotated").await;
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert_eq!(actor(&rotated[0]), ("admin_key", true));
    let deleted = entries(&app, &key, "domain.deleted").await;
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["target_id"], a_id.as_str());
    assert_eq!(deleted[0]["changes"]["name"], "a.test");

    // Suppressions: added (a second add is a 409 and no entry), removed.
    let body = json!({"email": "Gone@Example.com", "detail": "asked to stop"});
    assert_eq!(
        app.post("/v1/suppressions", &key, body.clone())
            .await
            .status,
        201
    );
    assert_eq!(app.post("/v1/suppressions", &key, body).await.status, 409);
    let r = app.delete("/v1/suppressions/gone@example.com", &key).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let added = entries(&app, &key, "suppression.added").await;
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0]["target_id"], "gone@example.com");
    assert_eq!(added[0]["changes"]["reason"], "manual");
    assert_eq!(actor(&added[0]), ("tenant_key", true));
    let removed = entries(&app, &key, "suppression.removed").await;
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0]["target_id"], "gone@example.com");

    // Templates: created, updated, deleted; the text itself is not logged.
    let tpl = json!({"name": "audit-me", "subject": "Hi {{ name }}", "text": "SECRET-BODY-TEXT"});
    let r = app.post("/v1/templates", &key, tpl.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let tpl_id = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(app.post("/v1/templates", &key, tpl).await.status, 409);
    let r = app
        .put(
            "/v1/templates/audit-me",
            &key,
            json!({"html": "<p>SECRET-BODY-HTML</p>"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.delete("/v1/templates/audit-me", &key).await.status, 204);
    let created = entries(&app, &key, "template.created").await;
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["target_id"], tpl_id.as_str());
    assert_eq!(created[0]["changes"]["name"], "audit-me");
    let updated = entries(&app, &key, "template.updated").await;
    assert_eq!(updated.len(), 1, "{updated:?}");
    assert_eq!(updated[0]["changes"]["changed"], json!(["html"]));
    let deleted = entries(&app, &key, "template.deleted").await;
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["target_id"], tpl_id.as_str());
    let all = app.get("/v1/audit-log?limit=100", &key).await;
    assert!(!all.text.contains("SECRET-BODY"), "{}", all.text);
    // The recheck's entries are found by their actor kind too.
    let system = app.get("/v1/audit-log?actor=system", &key).await;
    assert_eq!(system.status, 200, "{}", system.text);
    assert_eq!(system.json["data"].as_array().unwrap().len(), 1);
}
