//! Findings 4 and 8: revocation and suspension touch only the keys they
//! concern; made-up tokens cost no database lookup past a per-address limit;
//! `/metrics` does not count the queue on every scrape.

use serde_json::json;

use super::tenant;
use crate::common::TestApp;

#[tokio::test]
async fn revoking_or_suspending_tenant_a_costs_tenant_b_no_argon2_run() {
    let app = TestApp::spawn().await;
    let (a, key_a1) = tenant(&app, "A", &["send", "webhooks:read"]).await;
    let key_a2 = app.tenant_key(&a, &["webhooks:read"]).await;
    let (_, key_b) = tenant(&app, "B", &["webhooks:read"]).await;
    for k in [&key_a1, &key_a2, &key_b] {
        assert_eq!(app.get("/v1/webhooks", k).await.status, 200);
    }
    let auth = &app.state.auth;
    let warm = auth.argon2_verifications();
    // Revoke A's first key.
    let keys = app
        .get(&format!("/v1/tenants/{a}/api-keys"), &app.admin_key)
        .await;
    let prefix_a1 = &key_a1[..key_a1.rfind('_').unwrap()];
    let id_a1 = keys.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == prefix_a1)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .delete(&format!("/v1/tenants/{a}/api-keys/{id_a1}"), &app.admin_key)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(app.get("/v1/webhooks", &key_a1).await.status, 401);
    assert_eq!(app.get("/v1/webhooks", &key_b).await.status, 200);
    assert_eq!(app.get("/v1/webhooks", &key_a2).await.status, 200);
    assert_eq!(
        auth.argon2_verifications(),
        warm,
        "revoking A's key re-ran argon2 for other keys"
    );
    // Suspend A: its keys stop at once, B keeps its cache entry (refreshed
    // just before, so the 5 s TTL cannot expire it meanwhile).
    assert_eq!(app.get("/v1/webhooks", &key_b).await.status, 200);
    let lookups = auth.key_lookups();
    let r = app
        .patch(
            &format!("/v1/tenants/{a}"),
            &app.admin_key,
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.get("/v1/webhooks", &key_a2).await.status, 403);
    assert_eq!(app.get("/v1/webhooks", &key_b).await.status, 200);
    assert_eq!(
        auth.key_lookups(),
        lookups + 1,
        "only A's key was looked up again"
    );
    assert_eq!(auth.argon2_verifications(), warm);
    // Deleting A likewise.
    assert_eq!(app.get("/v1/webhooks", &key_b).await.status, 200);
    let lookups = auth.key_lookups();
    assert_eq!(
        app.delete(&format!("/v1/tenants/{a}"), &app.admin_key)
            .await
            .status,
        204
    );
    assert_eq!(app.get("/v1/webhooks", &key_a2).await.status, 401);
    assert_eq!(app.get("/v1/webhooks", &key_b).await.status, 200);
    assert_eq!(
        auth.key_lookups(),
        lookups + 1,
        "only A's key was looked up again"
    );
    assert_eq!(auth.argon2_verifications(), warm);
}

fn made_up_token(i: usize) -> String {
    // Well-formed (16-char key id of a-z0-9, 32-char alphanumeric secret),
    // unknown to the server.
    format!("pl_live_{:0>16}_{:0>32}", format!("k{i}"), format!("s{i}"))
}

#[tokio::test]
async fn a_flood_of_made_up_tokens_costs_at_most_the_limit_in_lookups() {
    let app = TestApp::spawn_with(|s| s.auth.failed_per_ip_per_minute = 20).await;
    let (_, good) = tenant(&app, "Good", &["webhooks:read"]).await;
    // Verified before the flood: keeps working during it, from the cache or
    // (after the 5 s TTL) as a proven secret.
    assert_eq!(app.get("/v1/webhooks", &good).await.status, 200);
    let lookups = app.state.auth.key_lookups();
    let (mut unauthorized, mut limited) = (0, 0);
    let mut first_429 = None;
    for i in 0..1000 {
        let r = app.get("/v1/webhooks", &made_up_token(i)).await;
        match r.status {
            401 => unauthorized += 1,
            429 => {
                limited += 1;
                first_429.get_or_insert(r);
            }
            other => panic!("made-up token {i}: {other} {}", r.text),
        }
    }
    assert_eq!(unauthorized, 20);
    assert_eq!(limited, 980);
    assert!(
        app.state.auth.key_lookups() - lookups <= 20,
        "{} lookups for 1000 made-up tokens",
        app.state.auth.key_lookups() - lookups
    );
    let r = first_429.unwrap();
    assert_eq!(r.json["code"], "rate_limited");
    assert_eq!(r.json["status"], 429);
    assert!(r.header("retry-after").is_some());
    assert_eq!(app.get("/v1/webhooks", &good).await.status, 200);
    // Malformed tokens cost nothing and are not counted (still 401).
    assert_eq!(app.get("/v1/webhooks", "pl_live_short").await.status, 401);
}

#[tokio::test]
async fn forwarded_for_is_ignored_unless_trusted() {
    let app = TestApp::spawn_with(|s| s.auth.failed_per_ip_per_minute = 2).await;
    let hit = |i: usize, xff: &'static str| {
        let app = &app;
        async move {
            app.client
                .get(format!("{}/v1/webhooks", app.address))
                .bearer_auth(made_up_token(i))
                .header("x-forwarded-for", xff)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Spoofed addresses do not help: all count as 127.0.0.1.
    assert_eq!(hit(0, "10.0.0.1").await, 401);
    assert_eq!(hit(1, "10.0.0.2").await, 401);
    assert_eq!(hit(2, "10.0.0.3").await, 429);

    let app = TestApp::spawn_with(|s| {
        s.auth.failed_per_ip_per_minute = 2;
        s.auth.trust_x_forwarded_for = true;
    })
    .await;
    let hit = |i: usize, xff: &'static str| {
        let app = &app;
        async move {
            app.client
                .get(format!("{}/v1/webhooks", app.address))
                .bearer_auth(made_up_token(i))
                .header("x-forwarded-for", xff)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Behind a trusted proxy the rightmost entry counts.
    assert_eq!(hit(0, "6.6.6.6, 10.0.0.1").await, 401);
    assert_eq!(hit(1, "7.7.7.7, 10.0.0.1").await, 401);
    assert_eq!(hit(2, "8.8.8.8, 10.0.0.1").await, 429);
    assert_eq!(hit(3, "10.0.0.2").await, 401);
}

#[tokio::test]
async fn metrics_scrapes_share_one_queue_count_per_period() {
    let app = TestApp::spawn().await;
    let before = app.state.queue_depth.queries();
    for _ in 0..5 {
        let r = app
            .client
            .get(format!("{}/metrics", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.text().await.unwrap().contains("postline_queue_depth"));
    }
    assert_eq!(app.state.queue_depth.queries() - before, 1);
}
