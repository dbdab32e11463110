//! Measure (issue 29, not a test: `#[ignore]`): redirects per second and
//! p99 of a tracked link against the server's static redirect (`GET /` →
//! `/console`), same server, same run, with wrk. Run:
//! `deploy/dev test --test suite tracking_bench -- --ignored --nocapture`.

use std::process::Command;

use postline::tracking::token::{Kind, Link, LinkKeys};

use crate::common::TestApp;

/// `(requests per second, p99 latency as wrk prints it)`.
fn wrk(url: &str) -> (f64, String) {
    let out = Command::new("wrk")
        .args(["-t2", "-c32", "-d10s", "--latency", url])
        .output()
        .expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("wrk's rate");
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| v.trim().to_string())
        .expect("wrk's p99");
    (rps, p99)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn redirects_per_second_against_a_static_redirect() {
    let app = TestApp::spawn_with(|s| s.tracking.public_url = "https://t.example".into()).await;
    let keys = LinkKeys::from_settings(&app.state.settings).unwrap();
    let token = keys
        .token(&Link {
            kind: Kind::Click,
            tenant_id: uuid::Uuid::new_v4(),
            email_id: uuid::Uuid::new_v4(),
            recipient: Some("rcpt@example.org".into()),
            url: Some(
                "https://shop.example/products/42?utm_source=mail&utm_campaign=december".into(),
            ),
        })
        .unwrap();
    let tracked = format!("{}/c/{token}", app.address);
    let fixed = format!("{}/", app.address);
    let (a, b) = tokio::task::spawn_blocking(move || {
        let s1 = wrk(&fixed);
        let t = wrk(&tracked);
        let s2 = wrk(&fixed);
        ((s1, s2), t)
    })
    .await
    .unwrap();
    let ((s1, s2), t) = (a, b);
    println!(
        "RESULT static 302: {:.0} / {:.0} req/s (p99 {} / {}); tracked /c/: {:.0} req/s (p99 {}); ratio {:.2}",
        s1.0,
        s2.0,
        s1.1,
        s2.1,
        t.0,
        t.1,
        t.0 / ((s1.0 + s2.0) / 2.0)
    );
}
