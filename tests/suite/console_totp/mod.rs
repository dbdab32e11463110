//! TOTP (RFC 6238) for console users: codes are computed by Python's
//! `pyotp` (pinned in tests/console/requirements.txt, installed by
//! `deploy/dev test`) from the `otpauth://` URI the account page shows, so an
//! independent implementation judges the product.

mod flows;

use base64::Engine;
use postline::config::Secret;
use postline::console::users::Role;

use crate::common::TestApp;
use crate::console::{cli, csrf_of, get, post, user};
pub use flows::pyotp;
use flows::{code_step, code_step_maybe, enrol, password_step, wrong_code};

#[tokio::test]
async fn enrol_needs_a_right_code_and_sign_in_then_needs_a_fresh_one() {
    let app = TestApp::spawn().await;
    user(&app, "admin@example.com", Role::Admin, None).await;
    let (other, _) = crate::console::sign_in(&app, "admin@example.com", &[]).await;
    let (cookie, uri, used) = enrol(&app, "admin@example.com", true).await;
    // Turning it on ends the sessions opened with the password alone, but
    // the one that did it.
    assert_eq!(get(&app, &other, "/console/account").await.0, 303);
    assert_eq!(get(&app, &cookie, "/console/account").await.0, 200);

    // The password alone gives no session, only the code form.
    let (status, challenge, session) = password_step(&app, "admin@example.com").await;
    assert_eq!(status, 303);
    assert!(!session, "no session cookie before the code");
    let challenge = challenge.expect("challenge cookie");
    assert_eq!(get(&app, &challenge, "/console/tenants").await.0, 303);

    // The enrolment's code (step now) is used; the next step's is fresh.
    let (status, _, session) = code_step(&app, &challenge, &used).await;
    assert_eq!(
        (status, session.is_some()),
        (401, false),
        "the enrolment's code again"
    );
    let code = pyotp(&uri, 1);
    let (status, location, session) = code_step(&app, &challenge, &code).await;
    assert_eq!((status, location.as_deref()), (303, Some("/console")));
    let session = session.expect("session cookie after the code");
    let (status, page, _) = get(&app, &session, "/console/account").await;
    assert_eq!(status, 200);
    assert!(page.contains("admin@example.com"));
    // The challenge is used up; the same code in a new sign-in is refused.
    let (status, location, _) = code_step_maybe(&app, &challenge, &code).await;
    assert_eq!((status, location.as_deref()), (303, Some("/console/login")));
    let (_, again, _) = password_step(&app, "admin@example.com").await;
    let (status, _, session) = code_step(&app, &again.unwrap(), &code).await;
    assert_eq!((status, session), (401, None), "the same code twice");

    let r = app.get("/v1/audit-log", &app.admin_key).await;
    let entry = r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "console_user.totp_enabled")
        .cloned()
        .expect("audit entry");
    assert_eq!(entry["actor"]["kind"], "user", "{entry}");
    assert!(!r
        .text
        .contains(&uri[uri.find("secret=").unwrap() + 7..][..32]));
}

#[tokio::test]
async fn wrong_codes_count_towards_the_sign_in_throttle() {
    let app = TestApp::spawn_with(|s| s.console.login_failures_per_minute = 3).await;
    user(&app, "admin@example.com", Role::Admin, None).await;
    let (cookie, uri, _) = enrol(&app, "admin@example.com", false).await;
    let (_, challenge, _) = password_step(&app, "admin@example.com").await;
    let challenge = challenge.unwrap();
    let long = "1".repeat(7);
    let mut statuses = Vec::new();
    for bad in [wrong_code(&uri), "abcdef".to_string(), long] {
        statuses.push(code_step(&app, &challenge, &bad).await.0);
    }
    assert_eq!(statuses, [401, 401, 401]);
    // Throttled now: the right code, and the password step too.
    let (status, _, session) = code_step(&app, &challenge, &pyotp(&uri, 1)).await;
    assert_eq!((status, session), (429, None));
    assert_eq!(password_step(&app, "admin@example.com").await.0, 429);
    // And turning TOTP off from a session, with a Retry-After.
    let (_, page, _) = get(&app, &cookie, "/console/account").await;
    let r = crate::console::client()
        .post(format!("{}/console/account/totp/disable", app.address))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf_of(&page)), ("code", pyotp(&uri, 1))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let (_, page, _) = get(&app, &cookie, "/console/account").await;
    assert!(page.contains("TOTP is <strong>on"), "still on");
}

#[tokio::test]
async fn a_pending_sign_in_takes_at_most_five_wrong_codes_even_unthrottled() {
    let app = TestApp::spawn_with(|s| s.console.login_failures_per_minute = 0).await;
    user(&app, "admin@example.com", Role::Admin, None).await;
    let (_, uri, _) = enrol(&app, "admin@example.com", false).await;
    let (_, challenge, _) = password_step(&app, "admin@example.com").await;
    let challenge = challenge.unwrap();
    let bad = wrong_code(&uri);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (status, location, _) = code_step(&app, &challenge, &bad).await;
        seen.push((status, location));
    }
    let last = (303, Some("/console/login".to_string()));
    assert_eq!(seen[..4], vec![(401, None); 4][..]);
    assert_eq!(
        seen[4], last,
        "the fifth wrong code ends the pending sign-in"
    );
    let (status, location, session) = code_step_maybe(&app, &challenge, &pyotp(&uri, 1)).await;
    assert_eq!((status, location, session), (last.0, last.1, None));
    // The password again, then the right code: in.
    let (_, challenge, _) = password_step(&app, "admin@example.com").await;
    let (status, _, session) = code_step(&app, &challenge.unwrap(), &pyotp(&uri, 1)).await;
    assert_eq!((status, session.is_some()), (303, true));
}

#[tokio::test]
async fn a_pending_sign_in_takes_only_its_own_users_code() {
    let app = TestApp::spawn().await;
    let t = app.create_tenant(serde_json::json!({"name": "Acme"})).await;
    let tenant = t["id"].as_str().unwrap();
    user(&app, "admin@example.com", Role::Admin, None).await;
    user(&app, "dev@example.com", Role::Developer, Some(tenant)).await;
    let (_, admin_uri, _) = enrol(&app, "admin@example.com", false).await;
    let (_, dev_uri, _) = enrol(&app, "dev@example.com", false).await;
    let (_, admin_challenge, _) = password_step(&app, "admin@example.com").await;
    let (_, dev_challenge, _) = password_step(&app, "dev@example.com").await;
    let (admin_challenge, dev_challenge) = (admin_challenge.unwrap(), dev_challenge.unwrap());

    // The developer's code with the admin's pending sign-in signs nobody in.
    let dev_code = pyotp(&dev_uri, 1);
    assert_ne!(dev_code, pyotp(&admin_uri, 1));
    let (status, _, session) = code_step(&app, &admin_challenge, &dev_code).await;
    assert_eq!((status, session), (401, None));
    // A made-up challenge token is no pending sign-in at all.
    let forged = "postline_console_challenge=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (_, page, location) = get(&app, forged, "/console/login/totp").await;
    assert_eq!(location.as_deref(), Some("/console/login"), "{page}");

    let (status, _, session) = code_step(&app, &dev_challenge, &dev_code).await;
    assert_eq!(status, 303);
    let (_, page, _) = get(&app, &session.unwrap(), "/console/account").await;
    assert!(page.contains("dev@example.com") && !page.contains("admin@example.com"));
    let (status, _, session) = code_step(&app, &admin_challenge, &pyotp(&admin_uri, 1)).await;
    assert_eq!(status, 303);
    let (_, page, _) = get(&app, &session.unwrap(), "/console/account").await;
    assert!(page.contains("admin@example.com"));
}

#[tokio::test]
async fn turning_off_needs_a_code_and_the_cli_reset_needs_none() {
    let app = TestApp::spawn().await;
    user(&app, "admin@example.com", Role::Admin, None).await;
    let (cookie, uri, used) = enrol(&app, "admin@example.com", false).await;
    let (_, page, _) = get(&app, &cookie, "/console/account").await;
    let csrf = csrf_of(&page);
    // A new setup while on: refused, the secret unchanged.
    let (status, _) = post(
        &app,
        &cookie,
        "/console/account/totp/setup",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 409);
    let disable = |code: String| {
        let (app, cookie, csrf) = (&app, &cookie, &csrf);
        async move {
            let form = [("csrf", csrf.as_str()), ("code", code.as_str())];
            post(app, cookie, "/console/account/totp/disable", &form)
                .await
                .0
        }
    };
    assert_eq!(disable(wrong_code(&uri)).await, 422);
    assert_eq!(disable(used).await, 422, "the enrolment's code, reused");
    assert_eq!(disable(pyotp(&uri, 1)).await, 303);
    let (status, _, session) = password_step(&app, "admin@example.com").await;
    assert_eq!((status, session), (303, true), "password alone once off");

    // Locked out: the CLI turns it off; a sign-in pending before is void.
    let (_, uri, _) = enrol(&app, "admin@example.com", false).await;
    let (_, pending, _) = password_step(&app, "admin@example.com").await;
    let out = cli(
        &app,
        &["user", "totp-reset", "--email", "Admin@Example.com"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("TOTP turned off for"), "{stdout}");
    let (status, location, session) =
        code_step_maybe(&app, &pending.unwrap(), &pyotp(&uri, 1)).await;
    assert_eq!(
        (status, location.as_deref(), session),
        (303, Some("/console/login"), None)
    );
    let (status, _, session) = password_step(&app, "admin@example.com").await;
    assert_eq!((status, session), (303, true));
    let out = cli(
        &app,
        &["user", "totp-reset", "--email", "nobody@example.com"],
    );
    assert!(!out.status.success());
    let r = app.get("/v1/audit-log", &app.admin_key).await;
    let entry = r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "console_user.totp_reset")
        .cloned()
        .expect("audit entry");
    assert_eq!(entry["actor"]["kind"], "cli", "{entry}");
}

#[tokio::test]
async fn secrets_rotate_reseals_totp_secrets() {
    let old_app = TestApp::spawn().await;
    let tenant = old_app
        .create_tenant(serde_json::json!({"name": "T"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    user(&old_app, "admin@example.com", Role::Admin, None).await;
    user(&old_app, "owner@t.example", Role::Owner, Some(&tenant)).await;
    let (_, uri, _) = enrol(&old_app, "admin@example.com", false).await;
    let (_, owner_uri, _) = enrol(&old_app, "owner@t.example", false).await;

    let b64 = base64::engine::general_purpose::STANDARD;
    let mut settings = crate::common::test_settings(&old_app.db_url);
    settings.security.master_key = Secret::new(b64.encode([9u8; 32]));
    settings.security.previous_master_keys = old_app.state.settings.security.master_key.clone();
    let both = TestApp::spawn_on(settings).await;
    let vault = both.state.settings.vault().unwrap();
    let report = postline::secrets::rotate(&mut both.sql_conn(), &vault).unwrap();
    // The admins' secrets and the tenant users' (two tables since the split).
    for column in [
        "platform_console_users.totp_secret_enc",
        "console_users.totp_secret_enc",
    ] {
        let totp = report
            .iter()
            .find(|(n, _)| *n == column)
            .expect("the TOTP column is rotated");
        assert_eq!(totp.1.rotated, 1, "{column}");
    }

    // The new key alone opens them, and the same authenticators still work.
    let mut settings = crate::common::test_settings(&old_app.db_url);
    settings.security.master_key = Secret::new(b64.encode([9u8; 32]));
    let new_only = TestApp::spawn_on(settings).await;
    for (email, uri) in [("admin@example.com", &uri), ("owner@t.example", &owner_uri)] {
        let (_, challenge, _) = password_step(&new_only, email).await;
        let (status, _, session) = code_step(&new_only, &challenge.unwrap(), &pyotp(uri, 1)).await;
        assert_eq!((status, session.is_some()), (303, true), "{email}");
    }
}

#[tokio::test]
async fn with_totp_required_an_admin_without_it_reaches_only_the_account_page() {
    let app = TestApp::spawn_with(|s| s.console.require_totp_for_admins = true).await;
    let tenant = app.create_tenant(serde_json::json!({"name": "T"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    user(&app, "admin@example.com", Role::Admin, None).await;
    user(&app, "owner@t.example", Role::Owner, Some(&tenant)).await;
    let (admin, _) = crate::console::sign_in(&app, "admin@example.com", &[]).await;

    for path in ["/console/tenants", "/console/queue", "/console/keys"] {
        let (status, _, location) = get(&app, &admin, path).await;
        assert_eq!(
            (status, location.as_deref()),
            (303, Some("/console/account")),
            "{path}"
        );
    }
    let (status, page, _) = get(&app, &admin, "/console/account").await;
    assert_eq!(status, 200);
    let (status, body) = post(
        &app,
        &admin,
        "/console/tenants",
        &[("csrf", &csrf_of(&page)), ("name", "Sneaky")],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Set up TOTP first"), "{body}");
    let listed = app.get("/v1/tenants", &app.admin_key).await;
    assert!(!listed.text.contains("Sneaky"), "nothing was created");
    // Tenant users are not held to it.
    let (owner, _) = crate::console::sign_in(&app, "owner@t.example", &[]).await;
    assert_eq!(get(&app, &owner, "/console/messages").await.0, 200);

    // With TOTP on, the admin's pages open.
    let (enrolled, _, _) = enrol(&app, "admin@example.com", false).await;
    assert_eq!(get(&app, &enrolled, "/console/tenants").await.0, 200);
}
