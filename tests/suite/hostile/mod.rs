//! Hostile tenants (issue 11, part A): a tenant that tries to exhaust the
//! server's memory with templates and oversize messages, to slow the others'
//! webhooks or authentication, or to make unauthenticated requests cost a
//! database round trip each. Every test here failed on the code before the
//! fix it covers.

mod auth;
mod listeners;
mod oauth_lockout;
mod render_turns;
mod sizes;
mod templates;
mod webhooks;

use crate::common::TestApp;
use serde_json::Value;

async fn tenant(app: &TestApp, name: &str, perms: &[&str]) -> (String, String) {
    let t = app.create_tenant(serde_json::json!({ "name": name })).await;
    let id = t["id"].as_str().unwrap().to_string();
    let key = app.tenant_key(&id, perms).await;
    (id, key)
}

/// A `kB` figure of this process's /proc status (`VmRSS`, `VmHWM`).
fn proc_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

/// Tests that allocate tens of megabytes in this process take this lock,
/// so the RSS measured by the template-bomb test is not theirs.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or_default()
}
