//! Egress pools on a tenant's page in a real browser (issue 26): an admin
//! sees the tenant's pool per stream (`default` for both), picks the
//! configured `bulk` pool for broadcast mail in the form, saves, and sees it
//! on the page; the API's tenant view agrees (the form calls the same
//! update). The usage page splits by stream. Title, widths, axe-core and
//! screenshots as every page.

use fantoccini::Locator;
use postline::console::users::Role;
use postline::delivery::pools::PoolSettings;
use serde_json::json;

use super::harness::*;
use crate::common::smtp_sink::SmtpSink;
use crate::common::TestApp;
use crate::console::user;

#[tokio::test]
async fn an_admin_assigns_a_tenants_pool_per_stream() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |s| {
        s.delivery.pools = vec![PoolSettings {
            name: "bulk".into(),
            source_addresses: vec!["127.0.0.11".into()],
            ehlo_name: "bulk.mta.test".into(),
            relay: None,
        }];
    })
    .await;
    let base = app.address.clone();
    let t = app.create_tenant(json!({"name": "Acme"})).await;
    let tid = t["id"].as_str().unwrap().to_string();
    user(&app, "admin@example.com", Role::Admin, None).await;

    let d = driver().await;
    let profile = tempdir::Dir::new("console-pools");
    let c = browser(&d, &profile).await;
    sign_in(&c, &base, "admin@example.com").await;
    wait_path(&c, "/console").await;
    c.goto(&format!("{base}/console/tenants/{tid}"))
        .await
        .unwrap();
    wait_text(&c, "#pool-broadcast", "default").await;
    assert_eq!(text(&c, "#pool-transactional").await, "default");

    c.find(Locator::Css("#p-broadcast"))
        .await
        .unwrap()
        .select_by_value("bulk")
        .await
        .unwrap();
    click(&c, "#save-pools").await;
    wait_text(&c, "#pool-broadcast", "bulk").await;
    assert_eq!(text(&c, "#pool-transactional").await, "default");
    let picked = c
        .find(Locator::Css("#p-broadcast"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(picked.as_deref(), Some("bulk"));
    check_page(&c, "tenant-pools").await;

    let v = app.get(&format!("/v1/tenants/{tid}"), &app.admin_key).await;
    assert_eq!(
        v.json["pools"],
        json!({"transactional": "default", "broadcast": "bulk"}),
        "{}",
        v.text
    );

    // Usage by stream: one broadcast message counts in broadcast only.
    let key = app.tenant_key(&tid, &["send"]).await;
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "news@acme.test", "to": "x@example.org", "subject": "s", "text": "t", "stream": "broadcast"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let sent = "#usage-totals .tile:first-child .figure";
    for (stream, want) in [("broadcast", "1"), ("transactional", "0"), ("", "1")] {
        c.goto(&format!("{base}/console/usage?tenant={tid}"))
            .await
            .unwrap();
        c.find(Locator::Css("#u-stream"))
            .await
            .unwrap()
            .select_by_value(stream)
            .await
            .unwrap();
        click(&c, "form.filters button[type='submit']").await;
        if stream.is_empty() {
            wait_path(&c, "/console/usage").await;
            wait_contains(&c, "h1", " mail", false).await;
        } else {
            wait_contains(&c, "h1", &format!("{stream} mail"), true).await;
        }
        wait_text(&c, sent, want).await;
        if stream == "broadcast" {
            check_page(&c, "usage-broadcast").await;
        }
    }
    c.close().await.unwrap();
}
