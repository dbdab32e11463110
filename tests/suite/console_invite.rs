//! Invitations mailed through the default relay (issue 17, "sent by mail
//! when a relay is configured"): a real SMTP sink receives the one-time
//! link, following it sets a password and signs in; a relay that is down
//! loses nothing (the link is shown and still works).

use std::time::Duration;

use postline::console::users::Role;
use serde_json::json;

use crate::common::smtp_sink::SmtpSink;
use crate::common::{smtp_settings, TestApp};
use crate::console::{client, csrf_of, get, post, set_cookie, sign_in, user, PASSWORD};

const BASE: &str = "https://console.example.test";

/// The value of the page's `invite-link` field, HTML-unescaped (minijinja
/// escapes `/`).
fn shown_link(page: &str) -> String {
    let at = page
        .find("id=\"invite-link\" value=\"")
        .expect("the link is shown")
        + 24;
    let raw = page[at..].split('"').next().unwrap();
    raw.replace("&#x2f;", "/").replace("&amp;", "&")
}

/// Adds `email` to `tenant` from its page; the resulting page.
async fn invite(app: &TestApp, cookie: &str, tenant: &str, email: &str) -> String {
    let (_, page, _) = get(app, cookie, &format!("/console/tenants/{tenant}")).await;
    let (status, page) = post(
        app,
        cookie,
        &format!("/console/tenants/{tenant}/users"),
        &[
            ("csrf", &csrf_of(&page)),
            ("email", email),
            ("role", "developer"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    page
}

/// Sets the password through a one-time link path.
async fn accept(app: &TestApp, path: &str) -> u16 {
    let c = client();
    let form = c
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .unwrap();
    if form.status() != 200 {
        return form.status().as_u16();
    }
    let (login_cookie, _) = set_cookie(&form, "postline_console_login").unwrap();
    let csrf = csrf_of(&form.text().await.unwrap());
    c.post(format!("{}{path}", app.address))
        .header("cookie", &login_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("password", PASSWORD),
            ("confirm", PASSWORD),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn invitations_are_mailed_through_the_relay_and_survive_a_failed_mail() {
    let mut sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(|s| {
        smtp_settings(s, sink.port());
        s.console.public_url = format!("{BASE}/");
        s.console.mail_from = "console@postline.example.test".into();
    })
    .await;
    let tenant = app.create_tenant(json!({"name": "A"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    user(&app, "owner@a.example", Role::Owner, Some(&tenant)).await;
    let (owner, _) = sign_in(&app, "owner@a.example", &[]).await;

    let page = invite(&app, &owner, &tenant, "New.Dev@Example.com").await;
    let link = shown_link(&page);
    assert!(
        link.starts_with(&format!("{BASE}/console/invite/")),
        "{link}"
    );
    assert!(
        page.contains("The link was also mailed to new.dev@example.com"),
        "{page}"
    );
    let mail = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].mail_from, "console@postline.example.test");
    assert_eq!(mail[0].rcpt_to, ["new.dev@example.com"]);
    let text = mail[0].text();
    assert!(text.contains("To: new.dev@example.com"), "{text}");
    let mailed = text
        .lines()
        .find(|l| l.starts_with(BASE))
        .expect("the link in the mail")
        .trim()
        .to_string();
    assert_eq!(mailed, link, "the mailed link is the shown one");

    // Following the mailed link sets the password and signs in; once.
    let path = &mailed[BASE.len()..];
    assert_eq!(accept(&app, path).await, 303);
    assert_eq!(accept(&app, path).await, 404, "a one-time link");
    let (cookie, _) = sign_in(&app, "new.dev@example.com", &[]).await;
    assert_eq!(get(&app, &cookie, "/console/messages").await.0, 200);

    // The relay is down: the invitation is kept, its link shown and usable.
    sink.stop().await;
    let page = invite(&app, &owner, &tenant, "second@example.com").await;
    assert!(
        page.contains("Mailing the link to second@example.com failed"),
        "{page}"
    );
    let link = shown_link(&page);
    assert_eq!(accept(&app, &link[BASE.len()..]).await, 303);
    sign_in(&app, "second@example.com", &[]).await;
    assert_eq!(sink.count(), 1, "nothing more reached the sink");
}

#[tokio::test]
async fn without_a_relay_the_page_says_the_link_was_not_mailed() {
    let app = TestApp::spawn_with(|s| {
        s.console.public_url = BASE.into();
        s.console.mail_from = "console@postline.example.test".into();
    })
    .await;
    assert_ne!(
        app.state.settings.delivery.mode,
        postline::config::DeliveryMode::Smtp,
        "the test config has no relay"
    );
    let tenant = app.create_tenant(json!({"name": "A"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    user(&app, "admin@example.com", Role::Admin, None).await;
    let (admin, _) = sign_in(&app, "admin@example.com", &[]).await;
    let page = invite(&app, &admin, &tenant, "x@example.com").await;
    assert!(
        page.contains("Not mailed: no relay is configured"),
        "{page}"
    );
    assert!(shown_link(&page).starts_with(BASE));
}
