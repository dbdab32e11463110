//! The console's overview (`/console`, issue 23) without a browser: a
//! tenant user's figures are their tenant's alone, an admin's the
//! platform's with the tenants needing attention; the 24-hour count stops at
//! its cap. The page in a browser: `console_browser/pages.rs`.

use chrono::{Duration, Utc};
use postline::console::overview_model;
use postline::console::users::Role;
use serde_json::json;

use crate::common::TestApp;
use crate::console::{get, sign_in, user};

#[tokio::test]
async fn the_overview_counts_a_tenant_for_its_users_and_the_platform_for_admins() {
    let app = TestApp::spawn().await;
    let id = |v: serde_json::Value| v["id"].as_str().unwrap().to_string();
    let a = id(app.create_tenant(json!({"name": "Shop A"})).await);
    let b = id(app
        .create_tenant(json!({"name": "Busy B", "rate_limit": {"emails_per_day": 1}}))
        .await);
    for (tenant, n) in [(&a, 2), (&b, 1)] {
        let key = app.tenant_key(tenant, &["send"]).await;
        for i in 0..n {
            let r = app
                .post(
                    "/v1/emails",
                    &key,
                    json!({"from": "hi@shop.example", "to": format!("r{i}@example.com"),
                           "subject": "s", "text": "t"}),
                )
                .await;
            assert_eq!(r.status, 202, "{}", r.text);
        }
    }
    user(&app, "admin@example.com", Role::Admin, None).await;
    user(&app, "owner@a.example", Role::Owner, Some(&a)).await;

    let (admin, _) = sign_in(&app, "admin@example.com", &[]).await;
    let (status, page, _) = get(&app, &admin, "/console").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("id=\"accepted-24h\">3<"), "{page}");
    assert!(page.contains("id=\"queue-depth\">3<"), "{page}");
    assert!(
        page.contains("Busy B") && page.contains("at its daily cap: 1 of 1 today"),
        "{page}"
    );
    assert!(!page.contains(">Shop A<"), "Shop A needs no attention");

    let (owner, _) = sign_in(&app, "owner@a.example", &[]).await;
    let (status, page, _) = get(&app, &owner, "/console").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Overview of Shop A"), "{page}");
    assert!(page.contains("id=\"accepted-24h\">2<"), "{page}");
    assert!(page.contains("id=\"queue-depth\">2<"), "{page}");
    assert!(
        !page.contains("Busy B"),
        "another tenant's name on a tenant's overview"
    );
    assert!(page.contains("Nothing: your tenant is not"), "{page}");

    // The bound: the newest `cap` messages only; a tenant's own only.
    let mut conn = app.sql_conn();
    let since = Utc::now() - Duration::hours(1);
    let total = |rows: Vec<overview_model::RecentRow>| rows.iter().map(|r| r.n).sum::<i64>();
    assert_eq!(
        total(overview_model::recent(&mut conn, None, since, 2).unwrap()),
        2
    );
    assert_eq!(
        total(overview_model::recent(&mut conn, None, since, 3).unwrap()),
        3
    );
    let a_id = uuid::Uuid::parse_str(&a).unwrap();
    assert_eq!(
        total(overview_model::recent(&mut conn, Some(a_id), since, 100).unwrap()),
        2
    );
    assert_eq!(
        overview_model::queue_now(&mut conn, Some(a_id))
            .unwrap()
            .total,
        2
    );
}
