//! Issue 22, finding 7: a suspended tenant's users only read in the
//! console, as its API keys do: every page says the tenant is suspended,
//! every form that would change the tenant is 403 with the reason and
//! changes nothing; the user's own account page still works, and the console
//! writes again once the tenant is reactivated. Real HTTP, real sessions,
//! real CSRF tokens.

use postline::console::users::Role;
use serde_json::json;

use crate::common::TestApp;
use crate::console::{csrf_of, get, post, sign_in, user};

async fn count(app: &TestApp, path: &str) -> usize {
    let r = app.get(path, &app.admin_key).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    r.json["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_suspended_tenants_console_is_read_only() {
    let app = TestApp::spawn_with(|s| s.webhooks.allow_private_targets = true).await;
    let t = app.create_tenant(json!({"name": "Paused"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    user(&app, "owner@paused.example", Role::Owner, Some(&t)).await;
    let (owner, _) = sign_in(&app, "owner@paused.example", &[]).await;
    let (_, keys_page, _) = get(&app, &owner, "/console/keys").await;
    let csrf = csrf_of(&keys_page);
    assert!(!keys_page.contains("id=\"suspended\""), "{keys_page}");

    let r = app
        .patch(
            &format!("/v1/tenants/{t}"),
            &app.admin_key,
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let keys_path = format!("/v1/tenants/{t}/api-keys");
    let keys_before = count(&app, &keys_path).await;

    // Every page carries the banner.
    for page in [
        "/console/keys",
        "/console/domains",
        "/console/webhooks",
        "/console/inbound",
    ] {
        let (status, html, _) = get(&app, &owner, page).await;
        assert_eq!(status, 200, "{page}");
        assert!(
            html.contains("id=\"suspended\"") && html.contains("read-only"),
            "{page}: {html}"
        );
    }
    // The reported case: creating a key.
    let (status, html) = post(
        &app,
        &owner,
        "/console/keys",
        &[("csrf", &csrf), ("name", "ci"), ("permissions[]", "send")],
    )
    .await;
    assert_eq!(status, 403, "{html}");
    assert!(
        html.contains("suspended") && !html.contains("pl_live_"),
        "{html}"
    );
    assert_eq!(count(&app, &keys_path).await, keys_before);
    // Every other form that writes: refused the same way.
    for (path, form) in [
        (
            "/console/oauth-clients",
            vec![("name", "c"), ("permissions[]", "send")],
        ),
        ("/console/domains", vec![("name", "paused.example")]),
        ("/console/suppressions", vec![("email", "x@example.com")]),
        (
            "/console/webhooks",
            vec![("url", "http://127.0.0.1:9/hook")],
        ),
        (
            &*format!("/console/tenants/{t}/users"),
            vec![("email", "dev@paused.example"), ("role", "developer")],
        ),
        (
            "/console/inbound/routes",
            vec![("match", "*@paused.example"), ("action", "hold")],
        ),
        (
            &*format!("/console/inbound/routes/{}/delete", uuid::Uuid::new_v4()),
            vec![],
        ),
    ] {
        let mut f = vec![("csrf", csrf.as_str())];
        f.extend(form);
        let (status, html) = post(&app, &owner, path, &f).await;
        assert_eq!(status, 403, "{path}: {html}");
        assert!(html.contains("suspended"), "{path}: {html}");
    }
    for path in [
        format!("/v1/tenants/{t}/oauth-clients"),
        format!("/v1/tenants/{t}/domains"),
        format!("/v1/tenants/{t}/suppressions"),
        format!("/v1/tenants/{t}/webhooks"),
    ] {
        assert_eq!(count(&app, &path).await, 0, "{path}");
    }

    // The user's own account (TOTP) is not the tenant's: still changeable.
    let (status, html) = post(
        &app,
        &owner,
        "/console/account/totp/setup",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 303, "{html}");

    // Reactivated: the same form creates the key.
    let r = app
        .patch(
            &format!("/v1/tenants/{t}"),
            &app.admin_key,
            json!({"status": "active"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (status, html) = post(
        &app,
        &owner,
        "/console/keys",
        &[("csrf", &csrf), ("name", "ci"), ("permissions[]", "send")],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(count(&app, &keys_path).await, keys_before + 1);
}
