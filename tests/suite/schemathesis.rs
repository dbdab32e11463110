//! The OpenAPI document describes what the server does: schemathesis (an
//! external OpenAPI fuzzer, pinned in tests/schemathesis/requirements.txt and
//! installed by `deploy/dev test`) runs over every operation of
//! `/openapi.json` against a real server, once with a tenant key and once
//! with an admin key, and must report no failure of the checks
//! `not_a_server_error`, `status_code_conformance`, `content_type_conformance`
//! and `response_schema_conformance`.
//!
//! Path parameters are drawn from dictionaries of seeded objects (a tenant
//! with a domain, a message, a template, a webhook, a suppression, an OAuth
//! client and spare keys) most of the time, so handlers run on real rows, and
//! are generated the rest of the time (unknown and malformed ids). Order and
//! destruction: the tenant-key run goes first (it cannot delete its own key:
//! key and tenant routes are admin-only); in the admin run the destructive
//! operations that would remove what later requests authenticate with or
//! act on are pointed at spares: `DELETE /v1/tenants/{tenant}` at a victim
//! tenant, `DELETE /v1/admin-keys/{key}` at a second admin key, the tenant
//! key revocation at a spare tenant key. The admin key used by the run is
//! never in a dictionary, and its id cannot be guessed.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::dns_server::DnsServer;
use crate::common::TestApp;

/// The pinned version (tests/schemathesis/requirements.txt).
const VERSION: &str = "4.32.5";
const CHECKS: &str =
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";
/// Examples per operation in the fuzzing phase; the examples and coverage
/// phases add their own (deterministic) cases. Keeps both runs within a few
/// minutes on two loaded cores.
const MAX_EXAMPLES: &str = "12";
const SEED: &str = "20240614";

const TENANT_PERMS: [&str; 12] = [
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
];

/// The seeded objects a run's dictionaries point path parameters at.
struct Seeded {
    tenant: String,
    external_id: String,
    victim_tenant: String,
    tenant_key: String,
    spare_key_id: String,
    spare_admin_key_id: String,
    email: String,
    template: String,
    webhook: String,
    platform_webhook: String,
    domain: String,
    domain_name: String,
    suppression: String,
    tenant_client: String,
    platform_client: String,
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

async fn seed(app: &TestApp, dns: &DnsServer) -> Seeded {
    let admin = app.admin_key.clone();
    let t = app
        .create_tenant(json!({"name": "Fuzzed", "external_id": "fuzzed-ext"}))
        .await;
    let tenant = id(&t);
    let victim_tenant = id(&app.create_tenant(json!({"name": "Victim"})).await);
    let tenant_key = app.tenant_key(&tenant, &TENANT_PERMS).await;
    let spare = app.tenant_key(&tenant, &["send"]).await;
    let spare_key_id = key_id_of(app, &format!("/v1/tenants/{tenant}/api-keys"), &spare).await;
    let other_admin = created(
        app,
        "/v1/admin-keys",
        &admin,
        json!({"name": "spare", "permissions": ["usage:read"]}),
    )
    .await;
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
    Seeded {
        tenant,
        external_id: "fuzzed-ext".into(),
        victim_tenant,
        tenant_key,
        spare_key_id,
        spare_admin_key_id: id(&other_admin),
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

/// A TOML string literal.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// schemathesis.toml: dictionaries of real ids and which operations draw
/// their path parameters from them (probability 0.8: the rest generated).
fn config(s: &Seeded) -> String {
    let dict = |name: &str, values: &[&str]| {
        let vals: Vec<String> = values.iter().map(|v| q(v)).collect();
        format!("[dictionaries.{name}]\nvalues = [{}]\n\n", vals.join(", "))
    };
    let mut out = String::new();
    out.push_str(&dict("tenant", &[&s.tenant, &s.external_id]));
    out.push_str(&dict("victim", &[&s.victim_tenant]));
    out.push_str(&dict("email", &[&s.email]));
    out.push_str(&dict("template", &[&s.template, "fuzzed"]));
    out.push_str(&dict("webhook", &[&s.webhook]));
    out.push_str(&dict("platform_webhook", &[&s.platform_webhook]));
    out.push_str(&dict("domain", &[&s.domain, &s.domain_name]));
    out.push_str(&dict("suppression", &[&s.suppression]));
    out.push_str(&dict("tenant_client", &[&s.tenant_client]));
    out.push_str(&dict("platform_client", &[&s.platform_client]));
    out.push_str(&dict("tenant_key", &[&s.spare_key_id]));
    out.push_str(&dict("admin_key", &[&s.spare_admin_key_id]));
    // (path regex, method regex or "", [(parameter, dictionary)])
    let bindings: [(&str, &str, &[(&str, &str)]); 12] = [
        (
            "^/v1/tenants/\\{tenant\\}$",
            "^(GET|PUT|PATCH)$",
            &[("tenant", "tenant")],
        ),
        ("^/v1/tenants/\\{tenant\\}$", "^DELETE$", &[("tenant", "victim")]),
        (
            "^/v1/tenants/\\{tenant\\}/(api-keys|emails|usage|domains|suppressions|oauth-clients)$",
            "",
            &[("tenant", "tenant")],
        ),
        (
            "^/v1/tenants/\\{tenant\\}/api-keys/\\{key\\}$",
            "",
            &[("tenant", "tenant"), ("key", "tenant_key")],
        ),
        ("^/v1/admin-keys/\\{key\\}$", "", &[("key", "admin_key")]),
        (
            "^(/v1/tenants/\\{tenant\\})?/v1/emails/\\{email\\}$|^/v1/tenants/\\{tenant\\}/emails/\\{email\\}$",
            "",
            &[("tenant", "tenant"), ("email", "email")],
        ),
        (
            "^(/v1|/v1/tenants/\\{tenant\\})/templates(/\\{id\\}(/render)?)?$",
            "",
            &[("tenant", "tenant"), ("id", "template")],
        ),
        (
            "^(/v1|/v1/tenants/\\{tenant\\})/webhooks(/\\{id\\}(/deliveries|/test)?)?$",
            "",
            &[("tenant", "tenant"), ("id", "webhook")],
        ),
        (
            "^/v1/admin/webhooks/\\{id\\}",
            "",
            &[("id", "platform_webhook")],
        ),
        (
            "^(/v1|/v1/tenants/\\{tenant\\})/domains/\\{id\\}",
            "",
            &[("tenant", "tenant"), ("id", "domain")],
        ),
        (
            "^(/v1|/v1/tenants/\\{tenant\\})/suppressions/\\{id\\}$",
            "",
            &[("tenant", "tenant"), ("id", "suppression")],
        ),
        (
            "^/v1/(tenants/\\{tenant\\}/)?oauth-clients/\\{id\\}$",
            "",
            &[("tenant", "tenant"), ("id", "tenant_client")],
        ),
    ];
    for (path, method, params) in bindings {
        out.push_str("[[operations]]\n");
        let _ = writeln!(out, "include-path-regex = {}", q(path));
        if !method.is_empty() {
            let _ = writeln!(out, "include-method-regex = {}", q(method));
        }
        let ps: Vec<String> = params
            .iter()
            .map(|(p, d)| {
                format!(
                    "{} = {{ dictionary = {}, probability = 0.8 }}",
                    q(&format!("path.{p}")),
                    q(d)
                )
            })
            .collect();
        let _ = writeln!(out, "parameters = {{ {} }}\n", ps.join(", "));
    }
    out
}

/// Runs schemathesis with `key`; panics with its report on any failure.
async fn run(app: &TestApp, dir: &std::path::Path, who: &str, key: &str) {
    let started = Instant::now();
    let out = tokio::process::Command::new("schemathesis")
        .current_dir(dir)
        .args(["--config-file", "schemathesis.toml", "--no-color", "run"])
        .arg(format!("{}/openapi.json", app.address))
        .args(["--checks", CHECKS])
        .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES])
        .args(["--workers", "2", "--generation-database", "none"])
        .args(["--request-timeout", "30"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {key}"))
        .output()
        .await
        .expect("schemathesis runs (deploy/dev test installs tests/schemathesis/requirements.txt)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "schemathesis with the {who} key: {:?} in {:.0?}",
        out.status.code(),
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "schemathesis found failures with the {who} key:\n{report}"
    );
}

fn installed() -> bool {
    let out = std::process::Command::new("schemathesis")
        .arg("--version")
        .output();
    let version = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        version.contains(VERSION),
        "schemathesis {VERSION} is not installed (`deploy/dev test` installs \
         tests/schemathesis/requirements.txt; by hand: pip install -r tests/schemathesis/requirements.txt); found: {version:?}"
    );
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_conforms_to_the_document_with_a_tenant_key_and_an_admin_key() {
    assert!(installed());
    let dns = DnsServer::start().await;
    let ns = dns.nameserver();
    let app = TestApp::spawn_with(move |s| {
        s.dns.nameservers = vec![ns];
        // The fuzzer is one client sending as fast as it can: no 429s.
        s.limits.default_requests_per_minute = 1_000_000;
        s.limits.admin_requests_per_minute = 1_000_000;
        s.auth.failed_per_ip_per_minute = 1_000_000;
    })
    .await;
    let seeded = seed(&app, &dns).await;
    let dir = std::env::temp_dir().join(format!("schemathesis-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("schemathesis.toml"), config(&seeded)).expect("config");
    let _ = Duration::ZERO;
    run(&app, &dir, "tenant", &seeded.tenant_key).await;
    run(&app, &dir, "admin", &app.admin_key).await;
    let _ = std::fs::remove_dir_all(&dir);
}
