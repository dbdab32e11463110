//! Metrics, request ids and logs: what operators see, and that secrets never
//! appear in it.

use crate::common;

use std::time::Duration;

use crate::drills::Server;
use common::Api;
use serde_json::json;

/// The real binary (`postline api`, JSON logs at info) owns its logs: the
/// test reads every line it wrote, which a subscriber inside this shared test
/// process could not do.
#[tokio::test]
async fn request_ids_metrics_and_no_secrets_in_logs() {
    let db = common::fresh_database();
    let mut server = Server::new(
        &db,
        1,
        &[
            ("POSTLINE__LOG__LEVEL", "info"),
            ("POSTLINE__LOG__FORMAT", "json"),
        ],
    );
    server.role = "api";
    let admin_key = server.admin_key();
    server.start();
    let client = reqwest::Client::new();
    server.wait_up(&client, Duration::from_secs(30)).await;
    let app = Api::remote(&server.base, &admin_key);
    let password = "Relay-Pa55word-never-logged";
    let t = app
        .create_tenant(json!({"name": "Acme", "smtp": {"host": "smtp.acme.example", "password": password, "username": "u"}}))
        .await;
    let tid = t["id"].as_str().unwrap();
    let key = app.tenant_key(tid, &["send", "emails:read"]).await;
    let secret = key.rsplit_once('_').unwrap().1.to_string();
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "a@acme.example", "to": "x@example.com", "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 202);
    let id1 = r.header("x-request-id").expect("request id header");
    let r = app.get("/v1/emails", &key).await;
    let id2 = r.header("x-request-id").unwrap();
    assert_ne!(id1, id2);
    let wrong = format!("{}_{}", key.rsplit_once('_').unwrap().0, "Z".repeat(32));
    assert_eq!(app.get("/v1/emails", &wrong).await.status, 401);
    // a secret-bearing body that fails validation is not echoed to the log either
    let r = app
        .post(
            "/v1/tenants",
            &app.admin_key,
            json!({"name": "B", "smtp": {"host": "bad host", "password": password}}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(!r.text.contains(password));

    // metrics: route patterns, not raw paths; queue depth sampled at scrape
    let m = app.request("GET", "/metrics", None, None).await;
    assert_eq!(m.status, 200);
    assert!(
        m.text.contains(
            "postline_http_requests_total{method=\"POST\",route=\"/v1/emails\",status=\"202\"}"
        ),
        "{}",
        m.text
    );
    assert!(
        m.text.contains("route=\"/v1/tenants/{tenant}/api-keys\""),
        "{}",
        m.text
    );
    assert!(!m.text.contains(tid), "raw ids never become labels");
    assert!(
        m.text.contains("postline_queue_depth{status=\"ready\"} 1"),
        "{}",
        m.text
    );
    assert!(m
        .text
        .contains("postline_http_request_duration_seconds_bucket"));
    assert!(m.text.contains("postline_ingest_batch_rows_count"));

    let text = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(
        text.contains(&id1),
        "the request id is on the request's log lines"
    );
    let line = text
        .lines()
        .find(|l| l.contains(&id1) && l.contains("\"route\":\"/v1/emails\""))
        .expect("access line");
    assert!(line.contains("\"status\":202"), "{line}");
    for s in [password, &key, &secret, &app.admin_key] {
        assert!(!text.contains(s), "a secret reached the log");
    }
}

#[tokio::test]
async fn the_worker_role_serves_metrics_on_its_own_listener() {
    let db = common::fresh_database();
    let pool = postline::db::build_pool(&common::test_settings(&db).database);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let queue = postline::metrics::QueueDepth::new(pool, std::time::Duration::from_secs(15));
    let server = postline::http::worker_server(queue, listener).unwrap();
    tokio::spawn(server);
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("postline_queue_depth{status=\"ready\"} 0"),
        "{body}"
    );
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}
