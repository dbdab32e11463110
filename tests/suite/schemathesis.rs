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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Instant;

use postline::routes::Access;
use serde_json::{json, Value};

use crate::common::dns_server::DnsServer;
use crate::common::TestApp;

/// The pinned version (tests/schemathesis/requirements.txt).
const VERSION: &str = "4.32.5";
const CHECKS: &str =
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";
/// Examples per operation in the fuzzing phase; the examples and coverage
/// phases add their own (deterministic) cases. Keeps both runs within a few
/// minutes on two loaded cores. `POSTLINE_SCHEMATHESIS_EXAMPLES` and
/// `POSTLINE_SCHEMATHESIS_SEED` change them for a longer exploration.
const MAX_EXAMPLES: &str = "8";
const SEED: &str = "20240614";

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

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
    /// What DELETEs act on, by kind (`template`, `admin_key`, …).
    spares: HashMap<&'static str, String>,
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

/// A TOML string literal.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// How an operation's parameter is filled: from a dictionary of seeded
/// values most of the time (the rest generated), or always one value.
enum Fill {
    Dictionary(&'static str),
    Always(String),
}

/// The fill of path parameter `name` of `method path`, or none (generated).
/// Decided from the document, so a new route gets real objects where its
/// parameters are named like the existing ones.
fn path_fill(s: &Seeded, method: &str, path: &str, name: &str) -> Option<Fill> {
    let segments: Vec<&str> = path.split('/').collect();
    let before = segments
        .iter()
        .position(|seg| *seg == format!("{{{name}}}"))
        .and_then(|i| i.checked_sub(1))
        .map(|i| segments[i])
        .unwrap_or_default();
    let kind = match (name, before) {
        ("tenant", _) => "tenant",
        ("email", _) | ("id", "emails") => "email",
        ("key", "admin-keys") => "admin_key",
        ("key", "api-keys") => "tenant_key",
        ("id", "templates") => "template",
        ("id", "webhooks") if path.starts_with("/v1/admin/") => "platform_webhook",
        ("id", "webhooks") => "webhook",
        ("id", "domains") => "domain",
        ("id", "suppressions") => "suppression",
        ("id", "oauth-clients") if path.contains("{tenant}") => "tenant_client",
        ("id", "oauth-clients") => "platform_client",
        _ => return None,
    };
    // A DELETE acts on the seeded tenant's spare of its kind, always (not
    // on what the run authenticates with or reads; see the module comment):
    // a generated or pooled value could name a fixture.
    if method == "DELETE" {
        let target = match kind {
            "tenant" if path == "/v1/tenants/{tenant}" => &s.victim_tenant,
            "tenant" => &s.tenant,
            _ => s.spares.get(kind)?,
        };
        return Some(Fill::Always(target.clone()));
    }
    match kind {
        // Keys are only ever revoked (DELETE above).
        "admin_key" | "tenant_key" => None,
        _ => Some(Fill::Dictionary(kind)),
    }
}

/// A schema with its `$ref` followed (into `components.schemas`).
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        Some(name) => &spec["components"]["schemas"][name],
        None => schema,
    }
}

/// Body fields filled from dictionaries, found by name in the request
/// body's schema (and in the items of its list properties, as in a batch):
/// a send from the seeded tenant's verified domain can then be accepted.
fn body_fills(spec: &Value, op: &Value) -> Vec<(String, &'static str)> {
    const FIELDS: [(&str, &str); 5] = [
        ("from", "from"),
        ("to", "to"),
        ("From", "from"),
        ("To", "to"),
        ("tenant_id", "tenant"),
    ];
    let body = resolve(
        spec,
        &op["requestBody"]["content"]["application/json"]["schema"],
    );
    let mut out = Vec::new();
    let Some(props) = body["properties"].as_object() else {
        return out;
    };
    for (field, dictionary) in FIELDS {
        if props.contains_key(field) {
            out.push((format!("body.{field}"), dictionary));
        }
    }
    for (name, prop) in props {
        let items = resolve(spec, &prop["items"]);
        for (field, dictionary) in FIELDS {
            if items["properties"].get(field).is_some() {
                out.push((format!("body.{name}[*].{field}"), dictionary));
            }
        }
    }
    out
}

/// schemathesis.toml: the dictionaries, and one `[[operations]]` entry per
/// operation of `spec` that has a filled parameter (an entry per operation:
/// schemathesis takes each setting from the first entry matching).
fn config(s: &Seeded, spec: &Value) -> String {
    let mut out = String::new();
    let dictionaries: [(&str, Vec<&str>); 11] = [
        ("tenant", vec![&s.tenant, &s.external_id]),
        ("email", vec![&s.email]),
        ("template", vec![&s.template, "fuzzed"]),
        ("webhook", vec![&s.webhook]),
        ("platform_webhook", vec![&s.platform_webhook]),
        ("domain", vec![&s.domain, &s.domain_name]),
        ("suppression", vec![&s.suppression]),
        ("tenant_client", vec![&s.tenant_client]),
        ("platform_client", vec![&s.platform_client]),
        ("from", vec!["a@fuzzed.example", "Ann <ann@fuzzed.example>"]),
        ("to", vec!["b@example.com"]),
    ];
    for (name, values) in dictionaries {
        let vals: Vec<String> = values.iter().map(|v| q(v)).collect();
        let _ = writeln!(
            out,
            "[dictionaries.{name}]\nvalues = [{}]\n",
            vals.join(", ")
        );
    }
    let paths = spec["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let method = method.to_ascii_uppercase();
            let mut fills: Vec<String> = Vec::new();
            for p in op["parameters"].as_array().into_iter().flatten() {
                let (Some(name), Some(at)) = (p["name"].as_str(), p["in"].as_str()) else {
                    continue;
                };
                // An admin key names the tenant of a read with ?tenant_id=.
                if (at, name) == ("query", "tenant_id") {
                    fills.push(format!(
                        "{} = {{ dictionary = \"tenant\", probability = 0.8 }}",
                        q("query.tenant_id")
                    ));
                    continue;
                }
                if at != "path" {
                    continue;
                }
                match path_fill(s, &method, path, name) {
                    Some(Fill::Dictionary(d)) => fills.push(format!(
                        "{} = {{ dictionary = {}, probability = 0.8 }}",
                        q(&format!("path.{name}")),
                        q(d)
                    )),
                    Some(Fill::Always(v)) => {
                        fills.push(format!("{} = {}", q(&format!("path.{name}")), q(&v)))
                    }
                    None => {}
                }
            }
            for (field, d) in body_fills(spec, op) {
                fills.push(format!(
                    "{} = {{ dictionary = {}, probability = 0.8 }}",
                    q(&field),
                    q(d)
                ));
            }
            if fills.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "[[operations]]\ninclude-name = {}\nparameters = {{ {} }}\n",
                q(&format!("{method} {path}")),
                fills.join(", ")
            );
        }
    }
    out
}

/// Runs schemathesis with `key`; panics with its report on any failure.
/// Returns the statuses seen per operation (`"GET /v1/emails"` → statuses).
async fn run(
    app: &TestApp,
    dir: &std::path::Path,
    who: &str,
    key: &str,
) -> BTreeMap<String, BTreeSet<u16>> {
    let started = Instant::now();
    let events = dir.join(format!("events-{who}.ndjson"));
    let out = tokio::process::Command::new("schemathesis")
        .current_dir(dir)
        .args(["--config-file", "schemathesis.toml", "--no-color", "run"])
        .arg(format!("{}/openapi.json", app.address))
        .args(["--checks", CHECKS])
        .arg("--seed")
        .arg(setting("POSTLINE_SCHEMATHESIS_SEED", SEED))
        .arg("--max-examples")
        .arg(setting("POSTLINE_SCHEMATHESIS_EXAMPLES", MAX_EXAMPLES))
        .args(["--workers", "2", "--generation-database", "none"])
        .args(["--request-timeout", "30"])
        .args(["--report", "ndjson", "--report-ndjson-path"])
        .arg(&events)
        .arg("--header")
        .arg(format!("Authorization: Bearer {key}"))
        // How Postmark clients present a key.
        .arg("--header")
        .arg(format!("X-Postmark-Server-Token: {key}"))
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
        "schemathesis found failures with the {who} key (config and events in {}):\n{report}",
        dir.display()
    );
    statuses(&events)
}

/// The response statuses of each operation in schemathesis' NDJSON events.
fn statuses(events: &std::path::Path) -> BTreeMap<String, BTreeSet<u16>> {
    let text = std::fs::read_to_string(events).expect("schemathesis wrote its events");
    let mut seen: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let recorder = &event["ScenarioFinished"]["recorder"];
        let Some(label) = recorder["label"].as_str() else {
            continue;
        };
        for interaction in recorder["interactions"].as_object().into_iter().flatten() {
            if let Some(status) = interaction.1["response"]["status_code"].as_u64() {
                seen.entry(label.to_string())
                    .or_default()
                    .insert(status as u16);
            }
        }
    }
    seen
}

/// The run was not vacuous: every operation the key may call was answered
/// past authentication at least once (not only 401/403: the key stayed
/// valid and the handler ran), and every such read answered 2xx at least
/// once (the seeded objects were found).
fn assert_exercised(who: &str, admin: bool, seen: &BTreeMap<String, BTreeSet<u16>>) {
    let mut unreached = Vec::new();
    let mut unread = Vec::new();
    for e in postline::routes::all() {
        let allowed = match e.access {
            Access::Public | Access::Any(_) => true,
            Access::Tenant(_) => !admin,
            Access::Admin(_) => admin,
        };
        // The token endpoint takes client credentials, not the bearer key;
        // schemathesis leaves out the operation serving the document itself.
        if !allowed || e.path == "/oauth/token" || e.path == "/openapi.json" {
            continue;
        }
        let label = format!("{} {}", e.method, e.path);
        let got = seen.get(&label).cloned().unwrap_or_default();
        if !got.iter().any(|s| *s != 401 && *s != 403) {
            unreached.push(format!("{label} {got:?}"));
        }
        if e.method == actix_web::http::Method::GET && !got.iter().any(|s| (200..300).contains(s)) {
            unread.push(format!("{label} {got:?}"));
        }
    }
    assert!(
        unreached.is_empty(),
        "{who} key: operations never answered past authentication: {unreached:#?}"
    );
    assert!(
        unread.is_empty(),
        "{who} key: reads that never answered 2xx: {unread:#?}"
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
    let spec = app.get("/openapi.json", &app.admin_key).await.json;
    std::fs::write(dir.join("schemathesis.toml"), config(&seeded, &spec)).expect("config");
    let seen = run(&app, &dir, "tenant", &seeded.tenant_key).await;
    assert_exercised("tenant", false, &seen);
    let r = app.get("/v1/templates", &seeded.tenant_key).await;
    assert_eq!(r.status, 200, "the tenant key survives its run: {}", r.text);

    let seen = run(&app, &dir, "admin", &app.admin_key).await;
    assert_exercised("admin", true, &seen);
    let r = app
        .get(&format!("/v1/tenants/{}", seeded.tenant), &app.admin_key)
        .await;
    assert_eq!(
        r.status, 200,
        "the seeded tenant survives the admin run: {}",
        r.text
    );
    let _ = std::fs::remove_dir_all(&dir);
}
