//! Issue 22, finding 10: render processes run tenant code, so they see none
//! of the server's environment; and one tenant's slow templates neither hold
//! every process nor make the others wait without bound.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{code, tenant};
use crate::common::TestApp;

const RW: &[&str] = &["send", "templates:read", "templates:write", "emails:read"];

/// Within memory and fuel, but minutes of CPU: stopped by the 2 s CPU timer.
const SPIN: &str =
    "{% set a = 'x' * 8000000 %}{% for i in range(30000) %}{% set b = a|upper %}{% endfor %}ok";

async fn with_templates(app: &TestApp, name: &str) -> String {
    let (_, key) = tenant(app, name, RW).await;
    for (t, text) in [("spin", SPIN), ("fine", "Hi {{ n }}")] {
        let r = app
            .post(
                "/v1/templates",
                &key,
                json!({"name": t, "subject": "s", "text": text}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    key
}

/// The pids of this process's render children (every app of this binary).
fn sandbox_children() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces, so split after it.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(me) && String::from_utf8_lossy(&cmdline).contains("template-sandbox") {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn render_processes_see_none_of_the_servers_environment() {
    // The server's environment has something to leak: the harness's own
    // database URL (with its credentials) is in it.
    assert!(std::env::var_os("POSTLINE_TEST_DATABASE_URL").is_some());
    let app = TestApp::spawn().await;
    let key = with_templates(&app, "Curious").await;
    let r = app
        .post(
            "/v1/templates/fine/render",
            &key,
            json!({"variables": {"n": "Ann"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The child stays in the pool after its render: read its environment.
    let children = sandbox_children();
    assert!(!children.is_empty(), "a render process is running");
    let mut read = 0;
    for pid in children {
        // A child of another test may have ended since.
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        read += 1;
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .filter(|v| !v.is_empty())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        // Names only in the message: the values may be secrets.
        let names: Vec<&str> = vars
            .iter()
            .map(|v| v.split('=').next().unwrap_or(""))
            .collect();
        assert_eq!(names, ["RUST_BACKTRACE"], "child {pid}'s environment");
        assert_eq!(vars, ["RUST_BACKTRACE=0"]);
    }
    assert!(read > 0, "read a render process's environment");
}

#[tokio::test]
async fn one_tenants_slow_templates_leave_the_others_a_process() {
    // Two processes, one per tenant at most (the defaults), no wait bound
    // in the way.
    let app = TestApp::spawn_with(|s| {
        s.templates.render_processes = 2;
        s.templates.render_processes_per_tenant = 1;
        s.templates.render_wait_ms = 120_000;
    })
    .await;
    let slow = with_templates(&app, "Slow").await;
    let quick = with_templates(&app, "Quick").await;
    let started = Instant::now();
    let app = &app;
    let hog = async {
        let renders = (0..3).map(|_| async {
            let r = app
                .post("/v1/templates/spin/render", &slow, json!({"variables": {}}))
                .await;
            (r, started.elapsed())
        });
        futures_util::future::join_all(renders).await
    };
    let other = async {
        // Tenant A's renders are running (each takes 2 s of CPU time).
        tokio::time::sleep(Duration::from_millis(700)).await;
        let r = app
            .post(
                "/v1/templates/fine/render",
                &quick,
                json!({"variables": {"n": "Bo"}}),
            )
            .await;
        (r, started.elapsed())
    };
    let (hogged, (r, quick_done)) = tokio::join!(hog, other);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["text"], "Hi Bo");
    let first_slow = hogged.iter().map(|(_, t)| *t).min().unwrap();
    for (r, _) in &hogged {
        assert_eq!(r.status, 422, "{}", r.text);
        assert!(r.text.contains("ms of CPU time"), "{}", r.text);
    }
    // Before the fix both processes spun for tenant A and B waited for one.
    assert!(
        quick_done < first_slow,
        "tenant B's render finished at {quick_done:?}, after tenant A's first ({first_slow:?})"
    );
}

#[tokio::test]
async fn a_render_that_finds_no_process_in_time_is_a_clear_429() {
    let app = TestApp::spawn_with(|s| {
        s.templates.render_processes = 1;
        s.templates.render_processes_per_tenant = 1;
        s.templates.render_wait_ms = 300;
    })
    .await;
    let slow = with_templates(&app, "Slow").await;
    let other = with_templates(&app, "Other").await;
    let app = &app;
    let hog = app.post("/v1/templates/spin/render", &slow, json!({"variables": {}}));
    let refused = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let preview = app
            .post(
                "/v1/templates/fine/render",
                &other,
                json!({"variables": {"n": "Bo"}}),
            )
            .await;
        let waited = started.elapsed();
        let send = app
            .post(
                "/v1/emails",
                &other,
                json!({"from": "a@other.test", "to": "b@example.com", "template": "fine",
                       "variables": {"n": "Bo"}}),
            )
            .await;
        (preview, waited, send)
    };
    let (hogged, (preview, waited, send)) = tokio::join!(hog, refused);
    assert_eq!(hogged.status, 422, "{}", hogged.text);
    for r in [&preview, &send] {
        assert_eq!(r.status, 429, "{}", r.text);
        assert_eq!(code(&r.json), "template_renders_busy", "{}", r.text);
        assert!(
            r.text.contains("300 ms") && r.text.contains("templates.render_wait_ms"),
            "{}",
            r.text
        );
        assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    }
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // Nothing was queued for the refused send.
    let r = app.get("/v1/emails", &other).await;
    assert_eq!(
        r.json["data"].as_array().map(Vec::len),
        Some(0),
        "{}",
        r.text
    );
    // The process is free again: the same render goes through.
    let r = app
        .post(
            "/v1/templates/fine/render",
            &other,
            json!({"variables": {"n": "Bo"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
