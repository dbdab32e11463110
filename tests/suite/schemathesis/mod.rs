//! The OpenAPI document describes what the server does: schemathesis (an
//! external OpenAPI fuzzer, pinned in tests/schemathesis/requirements.txt and
//! installed by `deploy/dev test`) runs over every operation of
//! `/openapi.json` against a real server, once with a tenant key and once
//! with an admin key, and must report no failure of the checks
//! `not_a_server_error`, `status_code_conformance`, `content_type_conformance`
//! and `response_schema_conformance`.
//!
//! Path parameters are drawn from dictionaries of seeded objects (a tenant
//! with a verified domain, a message, a template, webhooks, a suppression,
//! OAuth clients) 80 % of the time, so handlers run on real rows, and are
//! generated (or taken from earlier responses by schemathesis) the rest of
//! the time; a send's `from` is the seeded domain's. Destruction: every
//! DELETE always acts on a spare made for it (`DELETE /v1/tenants/{tenant}`
//! on a victim tenant, `DELETE /v1/admin-keys/{key}` on a second admin key,
//! the tenant key revocation on a spare tenant key, a spare template,
//! webhook, domain, suppression, client), so no run revokes the key it
//! authenticates with or deletes what it reads. The tenant-key run goes
//! first. After each run the test checks that its key still works and that
//! the run reached every operation the key may call (`assert_exercised`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use postline::routes::Access;
use serde_json::Value;

use crate::common::dns_server::DnsServer;
use crate::common::TestApp;

mod config;
mod seed;

/// The pinned version (tests/schemathesis/requirements.txt).
const VERSION: &str = "4.32.5";
const CHECKS: &str =
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";
/// Examples per operation in the fuzzing phase; the examples and coverage
/// phases add their own (deterministic) cases. Keeps both runs within a few
/// minutes on two loaded cores. `POSTLINE_SCHEMATHESIS_EXAMPLES` and
/// `POSTLINE_SCHEMATHESIS_SEED` change them for a longer exploration
/// (`POSTLINE_SCHEMATHESIS_CHECKS` the checks, e.g. `all`).
const MAX_EXAMPLES: &str = "8";
const SEED: &str = "20240614";

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
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
        .arg("--checks")
        .arg(setting("POSTLINE_SCHEMATHESIS_CHECKS", CHECKS))
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

/// Reads whose objects the seed cannot make through the API: received mail
/// arrives over SMTP and the links are signed by the server for a sent
/// message. Their 2xx answers are tested where those objects are made
/// (tests/suite/inbound.rs, unsubscribe.rs, tracking.rs); here they must
/// still answer past authentication and conform to the document.
const NOT_SEEDED: &[&str] = &[
    "/v1/inbound/routes/{id}",
    "/v1/inbound/{id}",
    "/v1/inbound/{id}/raw",
    "/v1/inbound/{id}/attachments/{index}",
    "/u/{token}",
    "/c/{token}",
    "/o/{token}.gif",
];

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
            // HTML pages, not in the document (tests/suite/console.rs).
            Access::Console => false,
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
        if e.method == actix_web::http::Method::GET
            && !NOT_SEEDED.contains(&e.path)
            && !got.iter().any(|s| (200..300).contains(s))
        {
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

/// Panics unless the pinned schemathesis is on PATH.
fn require_installed() {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_conforms_to_the_document_with_a_tenant_key_and_an_admin_key() {
    require_installed();
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
    let seeded = seed::seed(&app, &dns).await;
    let dir = std::env::temp_dir().join(format!("schemathesis-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let spec = app.get("/openapi.json", &app.admin_key).await.json;
    std::fs::write(
        dir.join("schemathesis.toml"),
        config::config(&seeded, &spec),
    )
    .expect("config");
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
