//! The objects the fuzzer's path parameters point at, and their spares.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::common::dns_server::DnsServer;
use crate::common::TestApp;

const TENANT_PERMS: [&str; 14] = [
    "send",
    "emails:read",
    "templates:read",
    "templates:write",
    "webhooks:read",
    "webhooks:write",
    "usage:read",
    "domains:read",
    "domains:write",
    "suppressions:read",
    "suppressions:write",
    "audit:read",
    "inbound:read",
    "inbound:write",
];

/// The seeded objects a run's dictionaries point path parameters at.
pub struct Seeded {
    pub tenant: String,
    pub external_id: String,
    pub victim_tenant: String,
    pub tenant_key: String,
    /// What DELETEs act on, by kind (`template`, `admin_key`, …).
    pub spares: HashMap<&'static str, String>,
    pub email: String,
    pub template: String,
    pub webhook: String,
    pub platform_webhook: String,
    pub domain: String,
    pub domain_name: String,
    pub suppression: String,
    pub tenant_client: String,
    pub platform_client: String,
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

async fn created(app: &TestApp, path: &str, key: &str, body: Value) -> Value {
    let r = app.post(path, key, body).await;
    assert_eq!(r.status, 201, "POST {path}: {}", r.text);
    r.json
}

/// The key id of a full key (`pl_live_<key_id>_<secret>`) via the listing.
async fn key_id_of(app: &TestApp, list: &str, key: &str) -> String {
    let prefix = key.rsplit_once('_').expect("key format").0;
    let r = app.get(list, &app.admin_key).await;
    r.json["data"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["prefix"] == prefix)
        .map(id)
        .expect("key listed")
}

pub async fn seed(app: &TestApp, dns: &DnsServer) -> Seeded {
    let admin = app.admin_key.clone();
    let t = app
        .create_tenant(json!({"name": "Fuzzed", "external_id": "fuzzed-ext"}))
        .await;
    let tenant = id(&t);
    let victim_tenant = id(&app.create_tenant(json!({"name": "Victim"})).await);
    let tenant_key = app.tenant_key(&tenant, &TENANT_PERMS).await;
    let d =
        crate::domains::verified_domain(app, dns, &tenant_key, json!({"name": "fuzzed.example"}))
            .await;
    let r = app
        .post(
            "/v1/emails",
            &tenant_key,
            json!({"from": "a@fuzzed.example", "to": "b@example.com", "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let email = id(&r.json);
    let template = id(&created(
        app,
        "/v1/templates",
        &tenant_key,
        json!({"name": "fuzzed", "subject": "Hi {{ name }}", "text": "t"}),
    )
    .await);
    let webhook = id(&created(
        app,
        "/v1/webhooks",
        &tenant_key,
        json!({"url": "http://127.0.0.1:9/h", "events": ["*"]}),
    )
    .await);
    let platform_webhook = id(&created(
        app,
        "/v1/admin/webhooks",
        &admin,
        json!({"url": "http://127.0.0.1:9/p", "events": ["*"]}),
    )
    .await);
    let suppression = created(
        app,
        "/v1/suppressions",
        &tenant_key,
        json!({"email": "kept@example.com", "reason": "manual"}),
    )
    .await["email"]
        .as_str()
        .expect("email")
        .to_string();
    let tenant_client = id(&created(
        app,
        &format!("/v1/tenants/{tenant}/oauth-clients"),
        &admin,
        json!({"name": "c", "kind": "tenant", "permissions": ["send"]}),
    )
    .await);
    let platform_client = id(&created(
        app,
        "/v1/oauth-clients",
        &admin,
        json!({"name": "p", "kind": "platform", "permissions": ["usage:read"]}),
    )
    .await);
    let spares = spares(app, &tenant, &tenant_key).await;
    Seeded {
        tenant,
        external_id: "fuzzed-ext".into(),
        victim_tenant,
        tenant_key,
        spares,
        email,
        template,
        webhook,
        platform_webhook,
        domain: id(&d),
        domain_name: d["name"].as_str().expect("name").to_string(),
        suppression,
        tenant_client,
        platform_client,
    }
}

/// One more object of each kind, for the DELETEs of the run.
async fn spares(app: &TestApp, tenant: &str, key: &str) -> HashMap<&'static str, String> {
    let admin = &app.admin_key;
    let mut out = HashMap::new();
    let spare_key = app.tenant_key(tenant, &["send"]).await;
    out.insert(
        "tenant_key",
        key_id_of(app, &format!("/v1/tenants/{tenant}/api-keys"), &spare_key).await,
    );
    let made: [(&'static str, &str, &str, Value); 8] = [
        (
            "admin_key",
            "/v1/admin-keys",
            admin,
            json!({"name": "spare", "permissions": ["usage:read"]}),
        ),
        (
            "template",
            "/v1/templates",
            key,
            json!({"name": "spare", "subject": "s", "text": "t"}),
        ),
        (
            "webhook",
            "/v1/webhooks",
            key,
            json!({"url": "http://127.0.0.1:9/s", "events": ["*"]}),
        ),
        (
            "platform_webhook",
            "/v1/admin/webhooks",
            admin,
            json!({"url": "http://127.0.0.1:9/s", "events": ["*"]}),
        ),
        (
            "domain",
            "/v1/domains",
            key,
            json!({"name": "spare.fuzzed.example"}),
        ),
        (
            "suppression",
            "/v1/suppressions",
            key,
            json!({"email": "spare@example.com", "reason": "manual"}),
        ),
        (
            "tenant_client",
            &format!("/v1/tenants/{tenant}/oauth-clients"),
            admin,
            json!({"name": "s", "kind": "tenant", "permissions": ["send"]}),
        ),
        (
            "platform_client",
            "/v1/oauth-clients",
            admin,
            json!({"name": "s", "kind": "platform", "permissions": ["usage:read"]}),
        ),
    ];
    for (kind, path, by, body) in made {
        let v = created(app, path, by, body).await;
        // A suppression is addressed by its address.
        let handle = if kind == "suppression" {
            &v["email"]
        } else {
            &v["id"]
        };
        out.insert(kind, handle.as_str().expect("handle").to_string());
    }
    out
}
