//! The console in a real browser (issue 17): Debian's chromium, headless,
//! driven through chromium-driver (WebDriver) with fantoccini. An admin signs
//! in, creates a tenant and a key (the secret shown once), adds a domain and
//! sees its records, finds a mail sent through the API (delivered to a real
//! SMTP sink) in the list and its detail, adds and removes a suppression and
//! sees usage; a tenant user in another browser profile meets 404 and 403;
//! the admin's session cookie, copied into that other profile, works until
//! the admin signs out and not after. A second journey turns on TOTP and
//! signs in with a code (computed by pyotp). `pages` visits every page:
//! titles, widths, axe-core and screenshots (target/console-shots/).

pub(crate) mod harness;
mod inbound;
mod pages;
mod pools;

use std::time::Duration;

use fantoccini::Locator;
use postline::console::users::Role;
use serde_json::json;

use crate::common::smtp_sink::SmtpSink;
use crate::common::TestApp;
use crate::console::user;
use harness::*;

#[tokio::test]
async fn an_admin_and_a_tenant_user_in_a_real_browser() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let base = app.address.clone();
    user(&app, "admin@example.com", Role::Admin, None).await;
    let d = driver().await;
    let (p1, p2) = (
        tempdir::Dir::new("console-admin"),
        tempdir::Dir::new("console-other"),
    );
    let admin = browser(&d, &p1).await;

    sign_in(&admin, &base, "admin@example.com").await;
    // The overview is the landing page; the tenants list one click away.
    wait_path(&admin, "/console").await;
    assert_eq!(text(&admin, "h1").await, "Platform overview");
    click(&admin, "nav a[href='/console/tenants']").await;
    wait_path(&admin, "/console/tenants").await;

    // A tenant, then its key: the secret on the create answer only.
    fill(&admin, "#t-name", "Shop").await;
    click(&admin, "#create-tenant").await;
    admin
        .wait()
        .for_element(Locator::Css("#tenant-id"))
        .await
        .unwrap();
    let tenant = text(&admin, "#tenant-id").await;
    wait_text(&admin, "#tenant-status", "active").await;
    admin
        .goto(&format!("{base}/console/keys?tenant={tenant}"))
        .await
        .unwrap();
    fill(&admin, "#k-name", "backend").await;
    click(&admin, "#create-key").await;
    admin
        .wait()
        .for_element(Locator::Css("#secret"))
        .await
        .unwrap();
    let secret = admin
        .find(Locator::Css("#secret"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(secret.starts_with("pl_live_"), "{secret}");
    admin
        .goto(&format!("{base}/console/keys?tenant={tenant}"))
        .await
        .unwrap();
    assert!(
        !admin.source().await.unwrap().contains(&secret),
        "shown once"
    );

    // A domain and the records to publish.
    admin
        .goto(&format!("{base}/console/domains?tenant={tenant}"))
        .await
        .unwrap();
    fill(&admin, "#d-name", "shop.example").await;
    click(&admin, "#add-domain").await;
    wait_contains(&admin, "table.records", "TXT", true).await;
    let records = text(&admin, "table.records").await;
    assert!(
        records.contains("TXT") && records.contains("dkim"),
        "{records}"
    );
    // The Copy buttons exist only if the inlined script ran under the CSP.
    let copies = admin.find_all(Locator::Css("button.copy")).await.unwrap();
    assert!(copies.len() >= 2, "{} copy buttons", copies.len());
    copies[0].click().await.unwrap();
    wait_contains(&admin, "button.copy", "Copied", true).await;

    // A mail through the API with that key, delivered to the sink.
    let r = app
        .post(
            "/v1/emails",
            &secret,
            json!({"from": "hello@shop.example",
        "to": "buyer@example.com", "subject": "Your order", "text": "Thanks!",
        "html": "<p>Thanks for <b>your order</b></p><script>parent.document.title='x'</script>"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let mail_id = r.json["id"].as_str().unwrap().to_string();
    sink.wait_for(1, Duration::from_secs(30)).await;
    let mut delivered = false;
    for _ in 0..100 {
        admin
            .goto(&format!(
                "{base}/console/messages?tenant={tenant}&status=delivered"
            ))
            .await
            .unwrap();
        if admin.source().await.unwrap().contains("Your order") {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(delivered, "the delivered mail is listed");
    // On a phone: the list fits the width (tables scroll inside their box).
    admin.set_window_size(390, 844).await.unwrap();
    let fits = admin
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, json!(true), "the message list is wider than a phone");
    admin.set_window_size(1280, 1000).await.unwrap();
    admin
        .find(Locator::LinkText("Your order"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&admin, "#message-status", "delivered").await;
    let recipients = text(&admin, "#recipients").await;
    assert!(
        recipients.contains("buyer@example.com") && recipients.contains("delivered"),
        "{recipients}"
    );
    assert!(text(&admin, "#timeline").await.contains("email.delivered"));
    let frame = admin.find(Locator::Css("iframe[sandbox]")).await.unwrap();
    assert_eq!(frame.attr("sandbox").await.unwrap().as_deref(), Some(""));
    // The frame's document: sandboxed by its own CSP, the mail's HTML as sent.
    let session = admin.get_named_cookie("postline_console").await.unwrap();
    let r = crate::console::client()
        .get(format!(
            "{base}/console/messages/{mail_id}/html?tenant={tenant}"
        ))
        .header("cookie", format!("postline_console={}", session.value()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.starts_with("sandbox;") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(r.text().await.unwrap().contains("<b>your order</b>"));
    assert_ne!(
        admin
            .execute("return document.title", vec![])
            .await
            .unwrap(),
        json!("x")
    );

    // Suppressions: add, then remove.
    admin
        .goto(&format!("{base}/console/suppressions?tenant={tenant}"))
        .await
        .unwrap();
    fill(&admin, "#s-email", "gone@example.com").await;
    click(&admin, "#add-suppression").await;
    wait_contains(&admin, "#suppressions", "gone@example.com", true).await;
    click(&admin, "button[aria-label='Remove gone@example.com']").await;
    wait_contains(&admin, "#suppressions", "gone@example.com", false).await;

    // Usage: the chart and the totals.
    admin
        .goto(&format!("{base}/console/usage?tenant={tenant}"))
        .await
        .unwrap();
    admin
        .find(Locator::Css("svg.chart rect"))
        .await
        .expect("a bar");
    assert_eq!(
        text(&admin, "#usage-totals .tile:first-child .figure").await,
        "1"
    );
    // Suspend and reactivate the tenant from its page.
    admin
        .goto(&format!("{base}/console/tenants/{tenant}"))
        .await
        .unwrap();
    click(&admin, "#suspend").await;
    wait_text(&admin, "#tenant-status", "suspended").await;
    let r = app.get("/v1/emails", &secret).await;
    assert_eq!(r.status, 403, "a suspended tenant's key: {}", r.text);
    click(&admin, "#activate").await;
    wait_text(&admin, "#tenant-status", "active").await;
    admin.goto(&format!("{base}/console/queue")).await.unwrap();
    assert!(text(&admin, "#health").await.contains("reachable"));

    // A tenant user of another tenant, in another profile.
    let other = app.create_tenant(json!({"name": "Other"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    user(&app, "dev@other.example", Role::Developer, Some(&other)).await;
    let dev = browser(&d, &p2).await;
    sign_in(&dev, &base, "dev@other.example").await;
    wait_path(&dev, "/console").await;
    assert!(!dev.source().await.unwrap().contains("Your order"));
    dev.goto(&format!("{base}/console/tenants/{tenant}"))
        .await
        .unwrap();
    assert_eq!(text(&dev, "h1").await, "Not found");
    dev.goto(&format!("{base}/console/domains?tenant={tenant}"))
        .await
        .unwrap();
    assert_eq!(text(&dev, "h1").await, "Not found");
    dev.goto(&format!("{base}/console/queue")).await.unwrap();
    assert_eq!(text(&dev, "h1").await, "Forbidden");

    // The admin changes that user's role on the tenant's team, then removes
    // them: the removed user's browser is signed out at its next page.
    admin
        .goto(&format!("{base}/console/tenants/{other}"))
        .await
        .unwrap();
    let row = "#team tr[data-user]";
    let member = admin
        .find(Locator::Css(row))
        .await
        .unwrap()
        .attr("data-user")
        .await
        .unwrap()
        .unwrap();
    admin
        .find(Locator::Css(&format!("#role-{member}")))
        .await
        .unwrap()
        .select_by_value("viewer")
        .await
        .unwrap();
    click(&admin, &format!("{row} button.set-role")).await;
    wait_text(&admin, &format!("{row} td.role"), "viewer").await;
    admin
        .execute("document.getElementById('team').scrollIntoView()", vec![])
        .await
        .unwrap();
    click(&admin, "button[aria-label='Remove dev@other.example']").await;
    wait_contains(&admin, "#team", "dev@other.example", false).await;
    dev.goto(&format!("{base}/console/messages")).await.unwrap();
    wait_path(&dev, "/console/login").await;

    // The admin's cookie in the other profile: works, then not after sign-out.
    let session = admin.get_named_cookie("postline_console").await.unwrap();
    dev.delete_all_cookies().await.unwrap();
    dev.goto(&format!("{base}/console/login")).await.unwrap();
    dev.add_cookie(session).await.unwrap();
    dev.goto(&format!("{base}/console/queue")).await.unwrap();
    assert_eq!(text(&dev, "h1").await, "Queue and health");
    click(&admin, "#logout").await;
    wait_path(&admin, "/console/login").await;
    dev.goto(&format!("{base}/console/queue")).await.unwrap();
    assert!(dev
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/console/login"));

    admin.close().await.unwrap();
    dev.close().await.unwrap();
}

#[tokio::test]
async fn totp_enrolment_and_sign_in_in_a_real_browser() {
    let app = TestApp::spawn().await;
    let base = app.address.clone();
    user(&app, "admin@example.com", Role::Admin, None).await;
    let d = driver().await;
    let profile = tempdir::Dir::new("console-totp");
    let c = browser(&d, &profile).await;
    sign_in(&c, &base, "admin@example.com").await;
    wait_path(&c, "/console").await;
    click(&c, "#account").await;
    wait_path(&c, "/console/account").await;
    click(&c, "#totp-setup").await;
    wait_contains(&c, "#totp-state", "Add this account", true).await;
    let uri = text(&c, "#totp-uri").await;
    check_page(&c, "account-totp").await;
    fill(&c, "#enable-code", &crate::console_totp::pyotp(&uri, 0)).await;
    click(&c, "#totp-enable").await;
    wait_contains(&c, "#totp-state", "TOTP is on", true).await;

    click(&c, "#logout").await;
    wait_path(&c, "/console/login").await;
    sign_in(&c, &base, "admin@example.com").await;
    wait_path(&c, "/console/login/totp").await;
    check_page(&c, "login-totp").await;
    fill(&c, "#code", &crate::console_totp::pyotp(&uri, 1)).await;
    click(&c, "#verify").await;
    wait_path(&c, "/console").await;
    c.close().await.unwrap();
}
