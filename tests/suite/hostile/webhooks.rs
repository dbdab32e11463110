//! Finding 3: a tenant's endpoint count is capped, and its slow endpoints
//! hold only its own share of the dispatcher.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{code, tenant};
use crate::common::smtp_sink::SmtpSink;
use crate::common::webhook_receiver::Receiver;
use crate::common::TestApp;

const PERMS: &[&str] = &["send", "webhooks:read", "webhooks:write"];

#[tokio::test]
async fn the_21st_endpoint_is_refused_and_a_deleted_one_frees_its_place() {
    let app = TestApp::spawn().await;
    let (_, key) = tenant(&app, "Hooky", PERMS).await;
    let (_, other) = tenant(&app, "Other", PERMS).await;
    let rx = Receiver::start().await;
    let create = |key: String, i: usize| {
        let app = &app;
        let url = rx.url(&format!("/h{i}"));
        async move {
            app.post("/v1/webhooks", &key, json!({"url": url, "events": ["*"]}))
                .await
        }
    };
    let mut first = String::new();
    for i in 0..20 {
        let r = create(key.clone(), i).await;
        assert_eq!(r.status, 201, "endpoint {i}: {}", r.text);
        if i == 0 {
            first = r.json["id"].as_str().unwrap().to_string();
        }
    }
    let r = create(key.clone(), 20).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(code(&r.json), "webhook_limit_reached", "{}", r.text);
    assert!(r.text.contains("at most 20"), "{}", r.text);
    // Another tenant is not affected by this one's count.
    assert_eq!(create(other, 0).await.status, 201);
    assert_eq!(
        app.delete(&format!("/v1/webhooks/{first}"), &key)
            .await
            .status,
        204
    );
    assert_eq!(create(key.clone(), 21).await.status, 201);
}

#[tokio::test]
async fn a_tenant_whose_endpoints_hang_does_not_delay_another_tenants_webhook() {
    let sink = SmtpSink::start().await;
    let rx = Receiver::start().await;
    // Tenant A's endpoints answer after 30 s (the POST times out at 5 s).
    rx.delay("/slow", Duration::from_secs(30));
    let app = TestApp::spawn_serving(sink.port(), |s| {
        s.webhooks.timeout_secs = 5;
        s.webhooks.lease_secs = 30;
        s.webhooks.poll_interval_ms = 50;
    })
    .await;
    let (_, key_a) = tenant(&app, "Slow", PERMS).await;
    let (_, key_b) = tenant(&app, "Quick", PERMS).await;
    for i in 0..20 {
        let r = app
            .post(
                "/v1/webhooks",
                &key_a,
                json!({"url": rx.url(&format!("/slow/{i}")), "events": ["email.queued"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = app
        .post(
            "/v1/webhooks",
            &key_b,
            json!({"url": rx.url("/quick"), "events": ["email.queued"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let body = json!({"from": "a@x.test", "to": "b@example.com", "subject": "s", "text": "t"});
    // 5 messages × 20 endpoints: 100 deliveries that each hang 5 s; one
    // FIFO of 16 slots would hold B's behind them for ≥ 30 s.
    for _ in 0..5 {
        assert_eq!(
            app.post("/v1/emails", &key_a, body.clone()).await.status,
            202
        );
    }
    // Let the dispatcher fill up with A's deliveries first.
    rx.wait_until(Duration::from_secs(10), |h| {
        h.iter().filter(|h| h.path.starts_with("/slow")).count() >= 4
    })
    .await;
    let started = Instant::now();
    assert_eq!(
        app.post("/v1/emails", &key_b, body.clone()).await.status,
        202
    );
    rx.wait_until(Duration::from_secs(20), |h| {
        h.iter().any(|h| h.path == "/quick")
    })
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "tenant B's webhook took {took:?}"
    );
    // A holds at most its share: 4 in flight (max_in_flight_per_tenant).
    let slow = rx
        .received()
        .iter()
        .filter(|h| h.path.starts_with("/slow"))
        .count();
    assert!(
        slow <= 4,
        "{slow} of tenant A's POSTs were started in the first round"
    );
}
