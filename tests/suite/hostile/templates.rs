//! Finding 1: a template that builds a huge string in a few instructions.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{code, proc_kb, tenant};
use crate::common::TestApp;

/// The template of the issue: 100 MB in one instruction, then 400 MB.
const BOMB: &str = "{% set a = 'x' * 100000000 %}{% set b = a ~ a ~ a ~ a %}{{ b|length }}";

const RW: &[&str] = &["send", "templates:read", "templates:write"];

#[tokio::test]
async fn the_memory_bomb_is_a_fast_422_and_the_server_stays_small() {
    let _heavy = super::HEAVY.lock().await;
    let app = TestApp::spawn().await;
    let (_, key) = tenant(&app, "Bomber", RW).await;
    let r = app
        .post(
            "/v1/templates",
            &key,
            json!({"name": "bomb", "subject": "s", "text": BOMB}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app
        .post(
            "/v1/templates",
            &key,
            json!({"name": "fine", "subject": "Hi {{ n }}", "text": "{{ 'ab' * 3 }}"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // A harmless render first: a render process exists and the baseline
    // includes whatever a render costs the server itself.
    let r = app
        .post(
            "/v1/templates/fine/render",
            &key,
            json!({"variables": {"n": "Ann"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let hwm_before = proc_kb("VmHWM");
    let rss_before = proc_kb("VmRSS");
    let started = Instant::now();
    // 16 at once: more than the render processes, so most wait their turn.
    let results = futures_util::future::join_all(
        (0..16).map(|_| app.post("/v1/templates/bomb/render", &key, json!({"variables": {}}))),
    )
    .await;
    let elapsed = started.elapsed();
    for r in &results {
        assert_eq!(r.status, 422, "{}", r.text);
        assert_eq!(code(&r.json), "template_render_failed", "{}", r.text);
        assert!(
            r.text.contains("MiB of memory"),
            "names the limit: {}",
            r.text
        );
    }
    assert!(
        elapsed < Duration::from_secs(30),
        "16 bombs took {elapsed:?}"
    );
    let hwm_after = proc_kb("VmHWM");
    let rss_after = proc_kb("VmRSS");
    // One bomb in this process would add ≥ 400 MB to the peak (the other
    // tests of this binary running meanwhile allocate far less).
    assert!(
        hwm_after.saturating_sub(hwm_before) < 128 * 1024,
        "peak RSS grew {} kB (VmHWM {hwm_before} → {hwm_after} kB)",
        hwm_after - hwm_before
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 128 * 1024,
        "RSS grew {} kB",
        rss_after.saturating_sub(rss_before)
    );
    // The sandbox recovers: a normal template renders afterwards.
    let r = app
        .post(
            "/v1/templates/fine/render",
            &key,
            json!({"variables": {"n": "Ann"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["text"], "ababab");
    // Sending with the bomb is refused the same way, and nothing is queued.
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "a@bomb.test", "to": "b@example.com", "template": "bomb", "variables": {}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(code(&r.json), "template_render_failed");
}

#[tokio::test]
async fn doubling_concatenation_and_lazy_repetition_are_bounded_too() {
    let app = TestApp::spawn().await;
    let (_, key) = tenant(&app, "Doubler", RW).await;
    // 27 doublings of 1 byte: 128 MiB, each step one instruction.
    let doubling = format!(
        "{{% set a = 'x' %}}{}{{{{ a|length }}}}",
        "{% set a = a ~ a %}".repeat(27)
    );
    // A lazy 100M-item sequence materialised by `join`.
    let joined = "{{ ([ 'y' ] * 100000000)|join|length }}";
    for (name, src) in [("doubling", doubling.as_str()), ("joined", joined)] {
        let r = app
            .post(
                "/v1/templates",
                &key,
                json!({"name": name, "subject": "s", "text": src}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let started = Instant::now();
        let r = app
            .post(
                &format!("/v1/templates/{name}/render"),
                &key,
                json!({"variables": {}}),
            )
            .await;
        assert_eq!(r.status, 422, "{name}: {}", r.text);
        assert_eq!(code(&r.json), "template_render_failed", "{name}");
        assert!(started.elapsed() < Duration::from_secs(30), "{name}");
    }
}

#[tokio::test]
async fn a_template_that_spins_on_big_values_is_stopped_by_the_timer() {
    let app = TestApp::spawn().await;
    let (_, key) = tenant(&app, "Spinner", RW).await;
    // Within memory and fuel, but each step scans 8 MB: minutes of CPU.
    let src =
        "{% set a = 'x' * 8000000 %}{% for i in range(30000) %}{% set b = a|upper %}{% endfor %}ok";
    let r = app
        .post(
            "/v1/templates",
            &key,
            json!({"name": "spin", "subject": "s", "text": src}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let started = Instant::now();
    let r = app
        .post("/v1/templates/spin/render", &key, json!({"variables": {}}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("ms of CPU time"), "{}", r.text);
    // 2 s of CPU; more wall time on a loaded machine, never minutes.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
