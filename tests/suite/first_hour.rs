//! What a newcomer sees of the real binary (issue 18): a log redirected to
//! a file holds no escape codes and one compact line per request; "listening
//! on" comes after the bind; Ctrl-C stops in logged steps, gracefully.

use std::time::{Duration, Instant};

use crate::common;
use crate::drills::Server;

fn wait_for_line(server: &Server, needle: &str, timeout: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if server.log_lines().iter().any(|l| l.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test]
async fn a_redirected_log_is_plain_one_line_per_request_and_ctrl_c_stops_in_steps() {
    let db = common::fresh_database();
    let mail = tempdir();
    let mut server = Server::new(
        &db,
        1,
        &[
            ("POSTLINE__LOG__LEVEL", "info"),
            ("POSTLINE__DELIVERY__MODE", "capture"),
            ("POSTLINE__DELIVERY__CAPTURE_DIR", &mail),
        ],
    );
    let key = server.admin_key();
    server.start();
    let listening = format!("listening on http://127.0.0.1:{}", server.port);
    assert!(
        wait_for_line(&server, &listening, Duration::from_secs(60)),
        "no {listening:?} in the log:\n{}",
        server.log_tail()
    );
    // The line is written after the bind: the port accepts at once.
    std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect after the line");

    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/v1/tenants", server.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id")
        .to_string();
    assert!(wait_for_line(&server, &id, Duration::from_secs(10)));
    let lines = server.log_lines();
    let of_request: Vec<&String> = lines.iter().filter(|l| l.contains(&id)).collect();
    assert_eq!(of_request.len(), 1, "one line per request: {of_request:#?}");
    let line = of_request[0];
    for part in [
        "method=GET",
        "route=/v1/tenants",
        "status=200",
        "latency_ms=",
        "tenant=admin",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
    assert!(line.len() < 250, "{} characters: {line}", line.len());
    assert_eq!(line.matches("/v1/tenants").count(), 1, "{line}");

    let status = server.interrupt(Duration::from_secs(45));
    let log = server.log_lines().join("\n");
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}; log:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a redirected log:\n{log}"
    );
    let mut at = 0;
    for step in [
        "signal=\"SIGINT\"",
        "shutdown: HTTP server stopped accepting",
        "shutdown: HTTP server stopped",
        "shutdown: worker stops claiming",
        "shutdown: worker stopped",
        "shutdown: complete",
    ] {
        match log[at..].find(step) {
            Some(i) => at += i + step.len(),
            None => panic!("{step:?} missing or out of order in:\n{log}"),
        }
    }
    assert!(!log.contains("forced shutdown"), "{log}");
    assert!(
        !log.contains("actix_server"),
        "actix chatter at info: {log}"
    );
    drop(server);
    common::drop_database(&db);
    let _ = std::fs::remove_dir_all(&mail);
}

fn tempdir() -> String {
    let dir = std::env::temp_dir().join(format!("postline-mail-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}

/// Outside local mode a loopback receiver is refused, and the refusal names
/// the setting that allows it (a metadata address names none: never allowed).
#[tokio::test]
async fn a_refused_loopback_webhook_names_the_setting_that_allows_it() {
    use serde_json::json;
    let app = common::TestApp::spawn_with(|s| s.webhooks.allow_private_targets = false).await;
    let t = app.create_tenant(json!({"name": "Hooks"})).await;
    let path = format!("/v1/tenants/{}/webhooks", t["id"].as_str().unwrap());
    let r = app
        .post(
            &path,
            &app.admin_key,
            json!({"url": "http://127.0.0.1:9000/hook", "events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let message = r.json["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("webhooks.allow_private_targets"),
        "{}",
        r.text
    );
    let r = app
        .post(
            &path,
            &app.admin_key,
            json!({"url": "http://169.254.169.254/latest", "events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(!r.text.contains("allow_private_targets"), "{}", r.text);
}
