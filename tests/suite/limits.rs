//! Per-tenant limits and usage metering against the real app, Postgres and SMTP sink.

use crate::common;

use std::time::Duration;

use common::smtp_sink::SmtpSink;
use common::TestApp;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

async fn tenant_with_key(app: &TestApp, body: Value) -> (String, String) {
    let t = app.create_tenant(body).await;
    let id = t["id"].as_str().unwrap().to_string();
    let key = app
        .tenant_key(&id, &["send", "emails:read", "usage:read"])
        .await;
    (id, key)
}

fn msg(to: &str) -> Value {
    json!({"from": "a@a.example", "to": to, "subject": "s", "text": "t"})
}

#[tokio::test]
async fn requests_per_minute_gives_429_with_headers_per_tenant() {
    let app = TestApp::spawn().await;
    // The limit's budget is the minute: no request of this test in the next.
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if second > 50 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - second)).await;
    }
    let (a_id, key_a) = tenant_with_key(
        &app,
        json!({"name": "A", "rate_limit": {"requests_per_minute": 3}}),
    )
    .await;
    let (_, key_b) = tenant_with_key(
        &app,
        json!({"name": "B", "rate_limit": {"requests_per_minute": 3}}),
    )
    .await;
    for i in 0..3 {
        let r = app.get("/v1/emails", &key_a).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("ratelimit-policy").as_deref(), Some("3;w=60"));
        let state = r.header("ratelimit").unwrap();
        assert!(
            state.starts_with(&format!("limit=3, remaining={}", 2 - i)),
            "{state}"
        );
    }
    let r = app.get("/v1/emails", &key_a).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json["code"], "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    // The budget's window is the minute: retry when it ends.
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(r.header("ratelimit").unwrap().contains("remaining=0"));
    // sends are limited too, and nothing is queued
    assert_eq!(
        app.post("/v1/emails", &key_a, msg("x@example.com"))
            .await
            .status,
        429
    );
    // tenant B is independent
    assert_eq!(app.get("/v1/emails", &key_b).await.status, 200);
    // admin keys are not limited by the tenant's limit
    assert_eq!(
        app.get(&format!("/v1/tenants/{a_id}/emails"), &app.admin_key)
            .await
            .status,
        200
    );
    // a raised limit applies at once on this node, no restart
    let r = app
        .put(
            &format!("/v1/tenants/{a_id}"),
            &app.admin_key,
            json!({"rate_limit": {"requests_per_minute": 100}}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app.get("/v1/emails", &key_a).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("ratelimit-policy").as_deref(), Some("100;w=60"));
    // a tenant without a limit carries no headers (default is unlimited)
    let (_, key_c) = tenant_with_key(&app, json!({"name": "C"})).await;
    assert!(app
        .get("/v1/emails", &key_c)
        .await
        .header("ratelimit")
        .is_none());
}

#[tokio::test]
async fn daily_quota_is_exact_across_two_nodes_for_single_and_batch_sends() {
    let node_a = TestApp::spawn().await;
    let node_b = TestApp::spawn_on(common::test_settings(&node_a.db_url)).await;
    let (tid, key) = tenant_with_key(
        &node_a,
        json!({"name": "Q", "rate_limit": {"emails_per_day": 25}}),
    )
    .await;

    // 40 single sends racing across both nodes: exactly 20 fit after a batch of 5
    let batch: Vec<Value> = (0..5).map(|i| msg(&format!("b{i}@example.com"))).collect();
    let r = node_b
        .post("/v1/emails/batch", &key, json!({"emails": batch}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let sends = (0..40).map(|i| {
        let node = if i % 2 == 0 { &node_a } else { &node_b };
        let key = key.clone();
        async move {
            node.post("/v1/emails", &key, msg(&format!("s{i}@example.com")))
                .await
        }
    });
    let results = futures_util::future::join_all(sends).await;
    let accepted = results.iter().filter(|r| r.status == 202).count();
    let refused: Vec<_> = results.iter().filter(|r| r.status == 429).collect();
    assert_eq!(accepted, 20, "exactly the remaining quota");
    assert_eq!(refused.len(), 20);
    for r in &refused {
        assert_eq!(r.json["code"], "daily_quota_exceeded");
        let retry: i64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(retry > 0 && retry <= 86_400);
    }
    // a batch that would cross the quota is refused whole
    let r = node_a
        .post(
            "/v1/emails/batch",
            &key,
            json!({"emails": [msg("z@example.com")]}),
        )
        .await;
    assert_eq!(r.status, 429);
    let usage = node_a
        .get(&format!("/v1/tenants/{tid}/usage"), &node_a.admin_key)
        .await;
    assert_eq!(usage.json["emails_sent"], 25, "{}", usage.text);
    let listed = node_a.get("/v1/emails?limit=100", &key).await;
    assert_eq!(listed.json["data"].as_array().unwrap().len(), 25);

    // with headroom, a batch that does not fit is refused whole and queues nothing
    node_a
        .put(
            &format!("/v1/tenants/{tid}"),
            &node_a.admin_key,
            json!({"rate_limit": {"emails_per_day": 27}}),
        )
        .await;
    let three: Vec<Value> = (0..3).map(|i| msg(&format!("t{i}@example.com"))).collect();
    let r = node_a
        .post("/v1/emails/batch", &key, json!({"emails": three}))
        .await;
    assert_eq!(r.status, 429);
    let listed = node_a.get("/v1/emails?limit=100", &key).await;
    assert_eq!(listed.json["data"].as_array().unwrap().len(), 25);
    let two: Vec<Value> = (0..2).map(|i| msg(&format!("t{i}@example.com"))).collect();
    assert_eq!(
        node_a
            .post("/v1/emails/batch", &key, json!({"emails": two}))
            .await
            .status,
        202
    );
}

#[tokio::test]
async fn a_paced_tenant_does_not_delay_another_tenants_mail() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let (_, slow) = tenant_with_key(
        &app,
        json!({"name": "Slow", "rate_limit": {"emails_per_second": 1}}),
    )
    .await;
    let (_, fast) = tenant_with_key(&app, json!({"name": "Fast"})).await;
    let batch: Vec<Value> = (0..20)
        .map(|i| msg(&format!("slow{i}@example.com")))
        .collect();
    assert_eq!(
        app.post("/v1/emails/batch", &slow, json!({"emails": batch}))
            .await
            .status,
        202
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let r = app.post("/v1/emails", &fast, msg("fast@example.com")).await;
    assert_eq!(r.status, 202);
    let deadline = started + Duration::from_secs(3);
    loop {
        if sink
            .messages()
            .iter()
            .any(|m| m.rcpt_to == vec!["fast@example.com".to_string()])
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fast tenant's message waited behind the paced tenant"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let slow_sent = sink
        .messages()
        .iter()
        .filter(|m| m.rcpt_to[0].starts_with("slow"))
        .count();
    assert!(
        slow_sent <= 6,
        "pacing holds: {slow_sent} of the paced tenant's messages sent after ~{elapsed:?}"
    );
    // the paced tenant's mail still all arrives, about one per second
    sink.wait_for(21, Duration::from_secs(40)).await;
}

#[tokio::test]
async fn usage_matches_the_messages_and_survives_deletion() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |s| {
        s.delivery.max_lifetime_secs = 1;
        s.limits.usage_flush_secs = 1;
    })
    .await;
    let (tid, key) =
        tenant_with_key(&app, json!({"name": "Billed", "external_id": "billed"})).await;
    let mut to = Vec::new();
    to.extend((0..5).map(|i| format!("ok{i}@example.com")));
    to.extend((0..3).map(|i| format!("bounce{i}@example.com")));
    to.extend((0..2).map(|i| format!("defer{i}@example.com")));
    for t in &to {
        assert_eq!(app.post("/v1/emails", &key, msg(t)).await.status, 202);
    }
    // wait for every message to be terminal
    let deadline = tokio::time::Instant::now() + WAIT;
    let counts = loop {
        let list = app.get("/v1/emails?limit=100", &key).await;
        let statuses: Vec<String> = list.json["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["status"].as_str().unwrap().to_string())
            .collect();
        let count = |s: &str| statuses.iter().filter(|x| *x == s).count() as i64;
        if count("delivered") + count("bounced") + count("failed") == 10 {
            break (count("delivered"), count("bounced"), count("failed"));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not terminal: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(counts, (5, 3, 2));
    app.state.requests.flush().await.unwrap();
    let u = app
        .get(&format!("/v1/tenants/{tid}/usage"), &app.admin_key)
        .await;
    assert_eq!(u.status, 200, "{}", u.text);
    assert_eq!(u.json["emails_sent"], 10);
    assert_eq!(u.json["emails_delivered"], counts.0);
    assert_eq!(u.json["emails_bounced"], counts.1);
    assert_eq!(u.json["emails_failed"], counts.2);
    assert!(u.json["api_requests"].as_i64().unwrap() >= 10, "{}", u.text);
    assert_eq!(u.json["daily"].as_array().unwrap().len(), 1);
    assert_eq!(u.json["external_tenant_id"], "billed");
    // the tenant's own view
    let own = app.get("/v1/usage", &key).await;
    assert_eq!(own.json["emails_sent"], 10);
    // a billing key (admin, usage:read only) pages every tenant
    let r = app
        .post(
            "/v1/admin-keys",
            &app.admin_key,
            json!({"name": "billing", "permissions": ["usage:read"]}),
        )
        .await;
    let billing = r.json["key"].as_str().unwrap().to_string();
    let page = app.get("/v1/usage", &billing).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["tenant_id"] == tid.as_str() && t["emails_sent"] == 10));
    assert_eq!(app.get("/v1/tenants", &billing).await.status, 403);

    // deletion keeps usage readable, by id and in the billing listing
    assert_eq!(
        app.delete(&format!("/v1/tenants/{tid}"), &app.admin_key)
            .await
            .status,
        204
    );
    let u = app.get(&format!("/v1/tenants/{tid}/usage"), &billing).await;
    assert_eq!(u.status, 200, "{}", u.text);
    assert_eq!(u.json["emails_delivered"], 5);
    let page = app.get("/v1/usage", &billing).await;
    assert!(page.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["tenant_id"] == tid.as_str()));
    // periods and validation
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    assert_eq!(
        app.get(&format!("/v1/usage?period={month}"), &billing)
            .await
            .status,
        200
    );
    assert_eq!(
        app.get("/v1/usage?period=2020-01", &billing).await.json["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["tenant_id"] == tid.as_str())
            .count(),
        0
    );
    assert_eq!(
        app.get("/v1/usage?period=2026-13", &billing).await.status,
        422
    );
    assert_eq!(
        app.get("/v1/usage?from=2026-02-01&to=2026-01-01", &billing)
            .await
            .status,
        422
    );
}
