//! The Inbound page in a real browser (issue 28): a tenant owner sees no
//! routes yet, is refused a route at an unverified domain in the form
//! (`domain_not_verified`), creates one to their webhook endpoint, and after
//! mail arrives over SMTP (Python's smtplib) reads it: the list, the
//! message's verdicts, stripped reply, attachments and the sent message it
//! answers. Every state: title, widths, axe-core, screenshots.

use fantoccini::Locator;
use postline::console::users::Role;
use serde_json::json;

use super::harness::*;
use crate::console::user;
use crate::console_inbound::tenant_id;
use crate::inbound::{message, smtplib, world_with};

#[tokio::test]
async fn the_inbound_page_creates_routes_and_shows_received_mail() {
    let w = world_with(|_| {}).await;
    let base = w.app.address.clone();
    let t = tenant_id(&w.app, "acme.test");
    user(&w.app, "owner@acme.test", Role::Owner, Some(&t)).await;
    let sent = w
        .app
        .post(
            "/v1/emails",
            &w.key,
            json!({"from": "noreply@acme.test", "to": "carol@sender.test", "subject": "Your ticket", "text": "t"}),
        )
        .await;
    assert_eq!(sent.status, 202, "{}", sent.text);
    let sent_id = sent.json["id"].as_str().unwrap().to_string();
    let mid = w
        .app
        .get(&format!("/v1/emails/{sent_id}"), &w.key)
        .await
        .json["message_id"]
        .as_str()
        .unwrap()
        .to_string();

    let d = driver().await;
    let profile = tempdir::Dir::new("console-inbound");
    let c = browser(&d, &profile).await;
    sign_in(&c, &base, "owner@acme.test").await;
    wait_path(&c, "/console").await;
    click(&c, "nav a[href='/console/inbound']").await;
    wait_path(&c, "/console/inbound").await;
    assert!(text(&c, "#routes").await.contains("No routes yet"));
    check_page(&c, "inbound-empty").await;

    // A domain the tenant has not verified: refused in the form.
    fill(&c, "#r-match", "help@elsewhere.test").await;
    c.find(Locator::Css("#r-action"))
        .await
        .unwrap()
        .select_by_value("hold")
        .await
        .unwrap();
    click(&c, "#create-route").await;
    wait_contains(&c, "#route-error", "domain_not_verified", true).await;
    check_page(&c, "inbound-error").await;

    // The typed match is kept; corrected: a route to the tenant's
    // endpoint, in Postmark's format.
    let field = c.find(Locator::Css("#r-match")).await.unwrap();
    assert_eq!(
        field.prop("value").await.unwrap().as_deref(),
        Some("help@elsewhere.test")
    );
    field.clear().await.unwrap();
    fill(&c, "#r-match", "reply@acme.test").await;
    for (sel, value) in [
        ("#r-action", "webhook"),
        ("#r-hook", w.hook.as_str()),
        ("#r-format", "postmark"),
    ] {
        c.find(Locator::Css(sel))
            .await
            .unwrap()
            .select_by_value(value)
            .await
            .unwrap();
    }
    click(&c, "#create-route").await;
    wait_contains(&c, "#routes", "reply@acme.test", true).await;
    assert!(text(&c, "#routes").await.contains("postmark"));

    // A reply to the sent message arrives, with an attachment.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let extra = format!("In-Reply-To: {mid}\r\n");
    let msg = message(
        "carol@sender.test",
        "reply+ticket42@acme.test",
        "Re: Your ticket",
        "Thanks, that worked.\r\n\r\nOn Sunday you wrote:\r\n> t\r\n",
        &extra,
        &[("receipt.txt", "text/plain", b"RECEIPT".to_vec())],
    );
    let out = smtplib(
        w.inbound.addr(),
        "carol@sender.test",
        &["reply+ticket42@acme.test"],
        &msg,
    )
    .await;
    assert_eq!(out["data"][0], 250, "{out}");
    c.goto(&format!("{base}/console/inbound")).await.unwrap();
    wait_contains(&c, "#received", "Re: Your ticket", true).await;
    assert!(text(&c, "#received").await.contains("carol@sender.test"));
    check_page(&c, "inbound").await;

    c.find(Locator::LinkText("Re: Your ticket"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_contains(&c, "#attachments", "receipt.txt", true).await;
    assert!(text(&c, "#stripped-reply")
        .await
        .contains("Thanks, that worked."));
    let href = c
        .find(Locator::Css("#in-reply-to"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(href, format!("/console/messages/{sent_id}"));
    check_page(&c, "inbound-message").await;
    c.close().await.unwrap();
}
