//! Every error is problem JSON, including actix's own extractor errors.

use crate::common;

use common::TestApp;
use serde_json::json;

async fn raw(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    ctype: Option<&str>,
    body: Vec<u8>,
) -> common::Resp {
    let mut req = app
        .client
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(&app.admin_key)
        .body(body);
    if let Some(c) = ctype {
        req = req.header("content-type", c);
    }
    TestApp::read(req.send().await.unwrap()).await
}

fn assert_problem(r: &common::Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json"),
        "{}",
        r.text
    );
    assert_eq!(r.json["status"], status);
    assert_eq!(r.json["code"], code, "{}", r.text);
    assert!(
        r.json["type"].is_string() && r.json["title"].is_string() && r.json["detail"].is_string()
    );
}

#[tokio::test]
async fn extractor_errors_are_problem_json() {
    let app = TestApp::spawn_with(|s| s.limits.max_request_bytes = 4096).await;
    use reqwest::Method;
    let r = raw(
        &app,
        Method::POST,
        "/v1/tenants",
        Some("application/json"),
        b"{\"name\": ".to_vec(),
    )
    .await;
    assert_problem(&r, 400, "malformed_json");
    let r = raw(
        &app,
        Method::POST,
        "/v1/tenants",
        Some("text/plain"),
        b"{}".to_vec(),
    )
    .await;
    assert_problem(&r, 415, "unsupported_media_type");
    let r = raw(
        &app,
        Method::POST,
        "/v1/tenants",
        Some("application/json"),
        br#"{"name":"a","bogus":1}"#.to_vec(),
    )
    .await;
    assert_problem(&r, 422, "validation_failed");
    let r = raw(
        &app,
        Method::POST,
        "/v1/tenants",
        Some("application/json"),
        br#"{}"#.to_vec(),
    )
    .await;
    assert_problem(&r, 422, "validation_failed");
    let big = format!(r#"{{"name":"{}"}}"#, "a".repeat(10_000));
    let r = raw(
        &app,
        Method::POST,
        "/v1/tenants",
        Some("application/json"),
        big.into_bytes(),
    )
    .await;
    assert_problem(&r, 413, "payload_too_large");
    // The send routes read raw bytes (not actix's Json extractor): their
    // size limit is actix's own 413, which was plain text (input drill).
    let big_send = format!(
        r#"{{"from":"a@b.test","to":"c@d.test","subject":"s","text":"{}"}}"#,
        "a".repeat(10_000)
    );
    for path in ["/v1/emails", "/v1/emails/batch"] {
        let r = raw(
            &app,
            Method::POST,
            path,
            Some("application/json"),
            big_send.clone().into_bytes(),
        )
        .await;
        assert_problem(&r, 413, "payload_too_large");
    }
    // A NUL cannot be stored in Postgres text, so it names no tenant; the
    // lookup used to fail with a 500 (input drill).
    for path in ["/v1/tenants/%00", "/v1/tenants/a%00b/api-keys"] {
        let r = app.get(path, &app.admin_key).await;
        assert_problem(&r, 404, "not_found");
    }
    // And for template names (a tenant key reaches the lookup).
    let t = app.create_tenant(json!({"name": "Nul"})).await;
    let key = app
        .tenant_key(
            t["id"].as_str().unwrap(),
            &["templates:read", "templates:write"],
        )
        .await;
    let r = app.get("/v1/templates/%00", &key).await;
    assert_problem(&r, 404, "not_found");
    let r = app.delete("/v1/templates/a%00b", &key).await;
    assert_problem(&r, 404, "not_found");
    // The same for the tag filter of the e-mail list (input drill, long run).
    for path in ["/v1/emails?tag=%00", "/v1/emails?tag=k:%00"] {
        let r = app.get(path, &app.admin_key).await;
        assert_problem(&r, 422, "validation_failed");
    }
    let r = app.get("/v1/no-such-route", &app.admin_key).await;
    assert_problem(&r, 404, "not_found");
    let r = app
        .request("DELETE", "/v1/tenants", Some(&app.admin_key), None)
        .await;
    assert_problem(&r, 405, "method_not_allowed");
    let r = app.get("/v1/tenants?limit=1000", &app.admin_key).await;
    assert_problem(&r, 422, "validation_failed");
    let r = app.get("/v1/tenants?limit=abc", &app.admin_key).await;
    assert_problem(&r, 422, "validation_failed");
    let r = app.get("/v1/tenants?cursor=%%%", &app.admin_key).await;
    assert!(r.status == 422 || r.status == 400, "{}", r.text);
    // nothing was created by any of the above (but the tenant "Nul")
    let list = app.get("/v1/tenants", &app.admin_key).await;
    assert_eq!(list.json["data"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let r = app.request("GET", "/healthz", None, None).await;
    assert_eq!(r.status, 200);
    let r = app.request("GET", "/readyz", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "ready");
}

/// A browser opening the base URL lands on the console's sign-in, not on a
/// JSON 404.
#[tokio::test]
async fn the_base_url_leads_to_the_console() {
    let app = TestApp::spawn().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects.get(&app.address).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/console");
    let page = reqwest::get(&app.address).await.unwrap();
    assert_eq!(page.url().path(), "/console/login");
    assert!(page.text().await.unwrap().contains("<form"));
}

#[tokio::test]
async fn readyz_is_503_when_the_database_is_unreachable() {
    let mut settings = common::test_settings("postgres://postgres@127.0.0.1:1/none");
    settings.database.connect_timeout_secs = 1;
    let app = postline::startup::Application::build(settings).unwrap();
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    let r = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/tenants"))
        .bearer_auth(format!("pl_admin_{}_{}", "a".repeat(16), "b".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
}

/// Postgres restarted (or a connection was killed) while the pool held a
/// connection: the next request on it may answer 503, never 500, and the
/// dead connection is dropped, not handed to the next caller. Found by the
/// Postgres drill: a connection that failed while preparing a statement (one
/// it had not run before) stayed in the pool, failing request after request.
#[tokio::test]
async fn a_connection_killed_under_the_pool_fails_one_request_at_most() {
    use diesel::prelude::*;
    let app = TestApp::spawn_with(|s| s.database.pool_size = 1).await;
    // Each round asks something the pooled connection has not prepared yet.
    for path in ["/v1/usage", "/v1/admin-keys", "/v1/tenants/no-such-tenant"] {
        let r = app.get("/v1/tenants", &app.admin_key).await;
        assert_eq!(r.status, 200, "{path}, before: {}", r.text);
        let killed: Vec<KilledRow> = diesel::sql_query(
            "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .load(&mut app.sql_conn())
        .unwrap();
        assert!(killed.iter().any(|k| k.killed), "no pooled backend to kill");
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let r = app.get(path, &app.admin_key).await;
            if r.status >= 500 {
                assert_problem(&r, 503, "unavailable");
            }
            statuses.push(r.status);
        }
        assert!(
            statuses[1..].iter().all(|s| *s < 500),
            "{path} after the kill: {statuses:?}"
        );
    }
}

/// Every pooled connection killed at once (as by a Postgres restart while
/// the service was idle): the first request that meets a dead one may get a
/// 503; it puts the pool in suspect mode, so the other dead connections are
/// found by a ping at checkout instead of each failing a request.
#[tokio::test]
async fn after_all_pooled_connections_die_at_most_one_request_fails() {
    use diesel::prelude::*;
    let app = TestApp::spawn_with(|s| s.database.pool_size = 4).await;
    // Fill the pool: four connections open and idle.
    let held: Vec<_> = (0..4).map(|_| app.pool().get().unwrap()).collect();
    drop(held);
    assert_eq!(app.pool().state().connections, 4);
    let killed: Vec<KilledRow> = diesel::sql_query(
        "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .load(&mut app.sql_conn())
    .unwrap();
    assert!(
        killed.iter().filter(|k| k.killed).count() >= 4,
        "{}",
        killed.len()
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = app.get("/v1/tenants", &app.admin_key).await;
        if r.status >= 500 {
            assert_problem(&r, 503, "unavailable");
        }
        statuses.push(r.status);
    }
    assert!(
        statuses.iter().filter(|s| **s >= 500).count() <= 1,
        "one dead connection each: {statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
}

#[derive(diesel::QueryableByName)]
struct KilledRow {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    killed: bool,
}
