//! Every console page in a real browser (issue 23): each one's `<title>` is
//! short text, it fits 390 and 1280 px without words broken mid-letter,
//! axe-core finds no serious or critical violation, and its screenshots at
//! both widths land in target/console-shots/ (CI keeps them). On the way:
//! the overview's figures, an OAuth client created through the API keys
//! page and used at `/oauth/token`, a Bcc-only message's To cell, headers as
//! a table, the usage month pre-filled, an invitation's page.

use std::time::Duration;

use chrono::Datelike;
use fantoccini::Locator;
use postline::console::users::Role;
use serde_json::json;

use super::harness::*;
use crate::common::smtp_sink::SmtpSink;
use crate::common::TestApp;
use crate::console::user;

#[tokio::test]
async fn every_console_page_is_titled_accessible_and_fits_a_phone_and_a_laptop() {
    let sink = SmtpSink::start().await;
    sink.script("nobody@example.com", vec![550]);
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let base = app.address.clone();
    user(&app, "admin@example.com", Role::Admin, None).await;
    let tenant = app.create_tenant(json!({"name": "Shop"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dormant = app.create_tenant(json!({"name": "Dormant"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .patch(
            &format!("/v1/tenants/{dormant}"),
            &app.admin_key,
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    user(&app, "owner@shop.example", Role::Owner, Some(&tenant)).await;
    let key = app.tenant_key(&tenant, &["send"]).await;
    for body in [
        json!({"from": "hello@shop.example", "to": "buyer@example.com", "subject": "Your order",
               "text": "Thanks!", "headers": {"X-Campaign": "autumn"}}),
        json!({"from": "hello@shop.example", "bcc": "hidden@example.com", "subject": "Blind copy",
               "text": "Only Bcc"}),
        json!({"from": "hello@shop.example", "to": "nobody@example.com", "subject": "Will bounce",
               "text": "No one"}),
    ] {
        let r = app.post("/v1/emails", &key, body).await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    sink.wait_for(2, Duration::from_secs(30)).await;

    let d = driver().await;
    let (p1, p2) = (
        tempdir::Dir::new("console-pages-admin"),
        tempdir::Dir::new("console-pages-owner"),
    );
    let admin = browser(&d, &p1).await;
    admin.goto(&format!("{base}/console/login")).await.unwrap();
    check_page(&admin, "login").await;
    sign_in(&admin, &base, "admin@example.com").await;
    wait_path(&admin, "/console").await;

    // The overview: the three messages of the last 24 hours (once the
    // worker settled them), the suspended tenant, two charts with legends.
    let mut settled = false;
    for _ in 0..100 {
        admin.goto(&format!("{base}/console")).await.unwrap();
        let figures = text(&admin, "#windows").await;
        if text(&admin, "#accepted-24h").await == "3" && figures.contains("bounced 1") {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(settled, "overview: {}", text(&admin, "#windows").await);
    assert!(text(&admin, "#attention").await.contains("Dormant"));
    let legends = admin
        .find_all(Locator::Css("svg.chart .legend"))
        .await
        .unwrap();
    assert!(legends.len() >= 8, "{} legend entries", legends.len());
    check_page(&admin, "overview").await;

    let pages = [
        ("tenants", "/console/tenants".to_string()),
        ("tenant", format!("/console/tenants/{tenant}")),
        ("messages-all", "/console/messages".to_string()),
        ("messages", format!("/console/messages?tenant={tenant}")),
        (
            "suppressions",
            format!("/console/suppressions?tenant={tenant}"),
        ),
        ("webhooks", format!("/console/webhooks?tenant={tenant}")),
        ("webhooks-platform", "/console/webhooks".to_string()),
        ("queue", "/console/queue".to_string()),
        ("account", "/console/account".to_string()),
        ("pick-tenant", "/console/usage".to_string()),
        ("admin-keys", "/console/keys".to_string()),
        (
            "not-found",
            format!("/console/tenants/{}", uuid::Uuid::new_v4()),
        ),
    ];
    for (name, path) in &pages {
        admin.goto(&format!("{base}{path}")).await.unwrap();
        check_page(&admin, name).await;
    }

    // A domain, and its records to publish.
    admin
        .goto(&format!("{base}/console/domains?tenant={tenant}"))
        .await
        .unwrap();
    fill(&admin, "#d-name", "shop.example").await;
    click(&admin, "#add-domain").await;
    wait_contains(&admin, "table.records", "TXT", true).await;
    check_page(&admin, "domains").await;

    // A Bcc-only message shows its Bcc in the list's To cell and its page.
    admin
        .goto(&format!("{base}/console/messages?tenant={tenant}"))
        .await
        .unwrap();
    let list = text(&admin, "#messages").await;
    assert!(list.contains("Bcc: hidden@example.com"), "{list}");
    admin
        .find(Locator::LinkText("Blind copy"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&admin, "#message-bcc", "hidden@example.com").await;
    check_page(&admin, "message-bcc").await;
    admin
        .goto(&format!("{base}/console/messages?tenant={tenant}"))
        .await
        .unwrap();
    admin
        .find(Locator::LinkText("Your order"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_contains(&admin, "#headers", "X-Campaign", true).await;
    assert!(text(&admin, "#headers").await.contains("autumn"));
    check_page(&admin, "message").await;

    // Usage: this month in the field, a chart with axes and a legend.
    admin
        .goto(&format!("{base}/console/usage?tenant={tenant}"))
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let month = admin
        .find(Locator::Css("#u-period"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(month, Some(format!("{:04}-{:02}", now.year(), now.month())));
    assert!(admin
        .find(Locator::Css("svg.chart text.axis"))
        .await
        .is_ok());
    check_page(&admin, "usage").await;

    // The API keys page: an OAuth client made through its form, whose
    // credentials then get a token (the section once sat in <title>).
    admin
        .goto(&format!("{base}/console/keys?tenant={tenant}"))
        .await
        .unwrap();
    fill(&admin, "#c-name", "ci-runner").await;
    click(&admin, "#create-client").await;
    admin
        .wait()
        .for_element(Locator::Css("#client-secret"))
        .await
        .unwrap();
    let client_id = text(&admin, "#client-id").await;
    let secret = admin
        .find(Locator::Css("#client-secret"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(text(&admin, "#clients").await.contains("ci-runner"));
    let token = crate::oauth::token(&app, &client_id, &secret, None).await;
    assert!(!token.is_empty());
    check_page(&admin, "keys").await;

    // An invitation, opened in another profile: the set-password page.
    admin
        .goto(&format!("{base}/console/tenants/{tenant}"))
        .await
        .unwrap();
    fill(&admin, "#u-email", "new@shop.example").await;
    click(&admin, "#add-user").await;
    admin
        .wait()
        .for_element(Locator::Css("#invite-link"))
        .await
        .unwrap();
    check_page(&admin, "tenant-invited").await;
    let link = admin
        .find(Locator::Css("#invite-link"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    let owner = browser(&d, &p2).await;
    owner.goto(&link).await.unwrap();
    check_page(&owner, "invite").await;

    // The tenant's owner: their overview and pages.
    sign_in(&owner, &base, "owner@shop.example").await;
    wait_path(&owner, "/console").await;
    assert_eq!(text(&owner, "h1").await, "Overview of Shop");
    assert_eq!(text(&owner, "#accepted-24h").await, "3");
    check_page(&owner, "owner-overview").await;
    for (name, path) in [
        ("owner-messages", "/console/messages".to_string()),
        ("owner-team", format!("/console/tenants/{tenant}")),
        ("owner-keys", "/console/keys".to_string()),
        ("owner-forbidden", "/console/queue".to_string()),
    ] {
        owner.goto(&format!("{base}{path}")).await.unwrap();
        check_page(&owner, name).await;
    }
    admin.close().await.unwrap();
    owner.close().await.unwrap();
}
