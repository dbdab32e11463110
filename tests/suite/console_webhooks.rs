//! The console's webhook Retry (issue 17, "webhooks (deliveries log, test,
//! retry)"): a real HTTP receiver answers 500, the delivery fails, Retry puts
//! it back in the outbox and the dispatcher delivers it; another tenant's
//! delivery is a 404, a delivery that did not fail (or of a disabled
//! endpoint) a 409, a viewer a 403. The same retry through the API
//! (`POST …/deliveries/{delivery_id}/retry`) is the last test.

use std::time::Duration;

use diesel::prelude::*;
use postline::console::users::Role;
use serde_json::{json, Value};

use crate::common::smtp_sink::SmtpSink;
use crate::common::webhook_receiver::Receiver;
use crate::common::TestApp;
use crate::console::{csrf_of, get, post, sign_in, user};

const PERMS: &[&str] = &["webhooks:read", "webhooks:write"];

/// A tenant, its key and an endpoint of it at `url`: (tenant, key, hook id).
async fn tenant_with_hook(app: &TestApp, name: &str, url: &str) -> (String, String, String) {
    let t = app.create_tenant(json!({ "name": name })).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let key = app.tenant_key(&t, PERMS).await;
    let r = app
        .post(
            "/v1/webhooks",
            &key,
            json!({"url": url, "events": ["email.delivered"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let hook = r.json["id"].as_str().unwrap().to_string();
    (t, key, hook)
}

/// The endpoint's newest delivery, through the API.
async fn newest(app: &TestApp, key: &str, hook: &str) -> Value {
    let log = app
        .get(&format!("/v1/webhooks/{hook}/deliveries"), key)
        .await;
    assert_eq!(log.status, 200, "{}", log.text);
    log.json["data"][0].clone()
}

#[tokio::test]
async fn a_failed_delivery_is_retried_from_the_console_and_delivered() {
    let sink = SmtpSink::start().await;
    let rx = Receiver::start().await;
    let app = TestApp::spawn_serving(sink.port(), |s| {
        s.webhooks.poll_interval_ms = 50;
    })
    .await;
    let (a, key_a, hook_a) = tenant_with_hook(&app, "A", &rx.url("/a")).await;
    let (_, key_b, hook_b) = tenant_with_hook(&app, "B", &rx.url("/b")).await;
    user(&app, "dev@a.example", Role::Developer, Some(&a)).await;
    user(&app, "viewer@a.example", Role::Viewer, Some(&a)).await;
    let (dev, _) = sign_in(&app, "dev@a.example", &[]).await;

    // A test event the receiver answers with 500: failed (a ping is sent once).
    rx.script(&[500]);
    let (_, page, _) = get(&app, &dev, "/console/webhooks").await;
    let csrf = csrf_of(&page);
    let (status, _) = post(
        &app,
        &dev,
        &format!("/console/webhooks/{hook_a}/test"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 303);
    let failed = newest(&app, &key_a, &hook_a).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["last_status_code"], 500);
    let delivery = failed["id"].as_str().unwrap().to_string();
    let (_, page, _) = get(&app, &dev, "/console/webhooks").await;
    assert!(page.contains(&format!("id=\"retry-{delivery}\"")), "{page}");

    // B's failed delivery: not A's to retry, exactly like a missing one.
    rx.script(&[500]);
    let r = app
        .post(&format!("/v1/webhooks/{hook_b}/test"), &key_b, json!({}))
        .await;
    assert!(r.status < 300, "{}", r.text);
    let b_delivery = newest(&app, &key_b, &hook_b).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let retry = |id: &str| format!("/console/webhooks/deliveries/{id}/retry");
    for id in [
        b_delivery.as_str(),
        "00000000-0000-4000-8000-000000000001",
        "not-a-uuid",
    ] {
        let (status, body) = post(&app, &dev, &retry(id), &[("csrf", &csrf)]).await;
        assert_eq!(status, 404, "{id}: {body}");
    }
    assert_eq!(newest(&app, &key_b, &hook_b).await["status"], "failed");

    // Without the CSRF token, or as a viewer: refused, nothing changes.
    let (status, _) = post(&app, &dev, &retry(&delivery), &[]).await;
    assert_eq!(status, 403);
    let (viewer, _) = sign_in(&app, "viewer@a.example", &[]).await;
    let (_, vpage, _) = get(&app, &viewer, "/console/webhooks").await;
    assert!(!vpage.contains("id=\"retry-"), "no Retry for viewers");
    let (status, _) = post(
        &app,
        &viewer,
        &retry(&delivery),
        &[("csrf", &csrf_of(&vpage))],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(newest(&app, &key_a, &hook_a).await["status"], "failed");

    // Retry: the dispatcher sends it again (the receiver now answers 200).
    let (status, body) = post(&app, &dev, &retry(&delivery), &[("csrf", &csrf)]).await;
    assert_eq!(status, 303, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let done = loop {
        let d = newest(&app, &key_a, &hook_a).await;
        if d["status"] == "succeeded" {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "{d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["id"], delivery.as_str());
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["last_status_code"], 200);
    let to_a: Vec<_> = rx
        .received()
        .into_iter()
        .filter(|h| h.path == "/a")
        .collect();
    assert_eq!(to_a.len(), 2);
    assert_eq!((to_a[0].answered, to_a[1].answered), (500, 200), "{to_a:?}");
    assert_eq!(to_a[1].webhook_id, delivery, "the same delivery, re-sent");

    // A delivery that did not fail is not retried.
    let (status, _) = post(&app, &dev, &retry(&delivery), &[("csrf", &csrf)]).await;
    assert_eq!(status, 409);
    let mut conn = app.sql_conn();
    let n: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "(SELECT count(*) FROM audit_log WHERE action = 'webhook.delivery_retried' \
         AND actor_kind = 'user' AND tenant_id = '{a}')"
    )))
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(n, 1, "one retry, audited as the user");

    // B's own developer: B's endpoint disabled, its failed delivery is a 409.
    let b = newest(&app, &key_b, &hook_b).await["tenant_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .patch(
            &format!("/v1/webhooks/{hook_b}"),
            &key_b,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    user(&app, "dev@b.example", Role::Developer, Some(&b)).await;
    let (dev_b, _) = sign_in(&app, "dev@b.example", &[]).await;
    let (_, page_b, _) = get(&app, &dev_b, "/console/webhooks").await;
    let (status, body) = post(
        &app,
        &dev_b,
        &retry(&b_delivery),
        &[("csrf", &csrf_of(&page_b))],
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("disabled"), "{body}");
    assert_eq!(newest(&app, &key_b, &hook_b).await["status"], "failed");
}

/// The same retry over the API: `POST /v1/webhooks/{id}/deliveries/{delivery_id}/retry`
/// answers the delivery pending again and the dispatcher delivers it; the
/// delivery must belong to the endpoint in the path, and to the caller.
#[tokio::test]
async fn a_failed_delivery_is_retried_through_the_api() {
    let sink = SmtpSink::start().await;
    let rx = Receiver::start().await;
    let app = TestApp::spawn_serving(sink.port(), |s| {
        s.webhooks.poll_interval_ms = 50;
    })
    .await;
    let (a, key_a, hook_a) = tenant_with_hook(&app, "A", &rx.url("/a")).await;
    let (_, key_b, hook_b) = tenant_with_hook(&app, "B", &rx.url("/b")).await;
    let r = app
        .post(
            "/v1/webhooks",
            &key_a,
            json!({"url": rx.url("/a2"), "events": ["email.delivered"]}),
        )
        .await;
    let other_hook_a = r.json["id"].as_str().unwrap().to_string();
    rx.script(&[500, 500]);
    for (key, hook) in [(&key_a, &hook_a), (&key_b, &hook_b)] {
        let r = app
            .post(&format!("/v1/webhooks/{hook}/test"), key, json!({}))
            .await;
        assert_eq!(r.json["status"], "failed", "{}", r.text);
    }
    let delivery = newest(&app, &key_a, &hook_a).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_delivery = newest(&app, &key_b, &hook_b).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = |hook: &str, d: &str| format!("/v1/webhooks/{hook}/deliveries/{d}/retry");

    // Another tenant's delivery, A's delivery under A's other endpoint, a
    // missing one: the same 404; the delivery stays failed.
    let missing = app
        .post(
            &path(&hook_a, "00000000-0000-4000-8000-000000000001"),
            &key_a,
            json!({}),
        )
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text);
    for p in [
        path(&hook_b, &b_delivery),
        path(&hook_a, &b_delivery),
        path(&other_hook_a, &delivery),
    ] {
        let r = app.post(&p, &key_a, json!({})).await;
        assert_eq!((r.status, &r.text), (404, &missing.text), "{p}");
    }
    let read_only = app.tenant_key(&a, &["webhooks:read"]).await;
    let r = app
        .post(&path(&hook_a, &delivery), &read_only, json!({}))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(newest(&app, &key_a, &hook_a).await["status"], "failed");

    let r = app.post(&path(&hook_a, &delivery), &key_a, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.json["id"].as_str(), r.json["status"].as_str()),
        (Some(delivery.as_str()), Some("pending"))
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d = newest(&app, &key_a, &hook_a).await;
        if d["status"] == "succeeded" {
            assert_eq!(d["attempts"], 2, "{d}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Succeeded now: a second retry is a conflict, and nothing is re-sent.
    let r = app.post(&path(&hook_a, &delivery), &key_a, json!({})).await;
    assert_eq!(r.status, 409, "{}", r.text);
    // The admin form of the route reaches the same delivery.
    let r = app
        .post(
            &format!("/v1/tenants/{a}/webhooks/{hook_a}/deliveries/{delivery}/retry"),
            &app.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let audit: i64 = diesel::sql_query(
        "SELECT count(*) AS n FROM audit_log WHERE action = 'webhook.delivery_retried'",
    )
    .get_result::<Count>(&mut app.sql_conn())
    .unwrap()
    .n;
    assert_eq!(audit, 1);
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}
