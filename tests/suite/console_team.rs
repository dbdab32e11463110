//! A tenant's team in the console: an owner changes a member's role (at the
//! member's next request) and removes members (signed out at once, cannot
//! sign in again); a tenant keeps one owner; developers cannot manage; other
//! tenants' members look like "not found"; every change is audited.

use diesel::prelude::*;
use postline::console::users::Role;
use serde_json::json;

use crate::common::TestApp;
use crate::console::{cli, client, csrf_of, get, post, sign_in, user, PASSWORD};

#[derive(diesel::QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    v: String,
}

fn texts(app: &TestApp, sql: &str) -> Vec<String> {
    diesel::sql_query(sql)
        .load::<Text>(&mut app.sql_conn())
        .unwrap()
        .into_iter()
        .map(|t| t.v)
        .collect()
}

fn id_of(app: &TestApp, email: &str) -> String {
    texts(
        app,
        &format!(
            "SELECT id::text AS v FROM console_users WHERE email = '{email}' \
             UNION ALL SELECT id::text FROM platform_console_users WHERE email = '{email}'"
        ),
    )
    .remove(0)
}

fn role_of(app: &TestApp, email: &str) -> Vec<String> {
    texts(
        app,
        &format!(
            "SELECT role AS v FROM console_users WHERE email = '{email}' \
             UNION ALL SELECT role FROM platform_console_users WHERE email = '{email}'"
        ),
    )
}

async fn tenant(app: &TestApp, name: &str) -> String {
    app.create_tenant(json!({ "name": name })).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Posts the team form of `member` on `tenant`'s page as `cookie`.
async fn change(
    app: &TestApp,
    cookie: &str,
    tenant: &str,
    member: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let (_, home, location) = get(app, cookie, "/console").await;
    let page = match location {
        Some(to) => get(app, cookie, &to).await.1,
        None => home,
    };
    let csrf = csrf_of(&page);
    let mut f = vec![("csrf", csrf.as_str())];
    f.extend_from_slice(form);
    post(
        app,
        cookie,
        &format!("/console/tenants/{tenant}/users/{member}"),
        &f,
    )
    .await
}

#[tokio::test]
async fn an_owner_changes_roles_and_removes_members_and_one_owner_stays() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "A").await;
    user(&app, "owner@a.example", Role::Owner, Some(&a)).await;
    user(&app, "dev@a.example", Role::Developer, Some(&a)).await;
    let (owner, _) = sign_in(&app, "owner@a.example", &[]).await;
    let (dev, _) = sign_in(&app, "dev@a.example", &[]).await;
    let dev_id = id_of(&app, "dev@a.example");
    let owner_id = id_of(&app, "owner@a.example");

    let (_, page, _) = get(&app, &owner, &format!("/console/tenants/{a}")).await;
    assert!(
        page.contains(&format!("/console/tenants/{a}/users/{dev_id}")),
        "{page}"
    );
    let (_, as_dev, _) = get(&app, &dev, &format!("/console/tenants/{a}")).await;
    assert!(
        !as_dev.contains("remove-user"),
        "a developer sees no team controls"
    );

    // A developer manages nothing; the developer still sends.
    let (status, _) = change(&app, &dev, &a, &owner_id, &[("action", "remove")]).await;
    assert_eq!(status, 403);
    assert_eq!(get(&app, &dev, "/console/webhooks").await.0, 200);

    // Developer → viewer: the next request already has a viewer's powers.
    let (status, body) = change(
        &app,
        &owner,
        &a,
        &dev_id,
        &[("action", "role"), ("role", "viewer")],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(role_of(&app, "dev@a.example"), ["viewer"]);
    let (_, sup, _) = get(&app, &dev, "/console/suppressions").await;
    let (status, _) = post(
        &app,
        &dev,
        "/console/suppressions",
        &[("csrf", &csrf_of(&sup)), ("email", "z@example.com")],
    )
    .await;
    assert_eq!(status, 403, "a viewer now");

    // Bad input: a clear 4xx, nothing changed.
    for form in [
        vec![("action", "role"), ("role", "admin")],
        vec![("action", "role"), ("role", "")],
        vec![("action", "promote")],
        vec![],
    ] {
        let (status, body) = change(&app, &owner, &a, &dev_id, &form).await;
        assert_eq!(status, 422, "{form:?}: {body}");
    }
    assert_eq!(role_of(&app, "dev@a.example"), ["viewer"]);
    let (status, _) = change(&app, &owner, &a, "not-a-uuid", &[("action", "remove")]).await;
    assert_eq!(status, 404);

    // The only owner can neither step down nor leave.
    for form in [
        vec![("action", "role"), ("role", "developer")],
        vec![("action", "remove")],
    ] {
        let (status, body) = change(&app, &owner, &a, &owner_id, &form).await;
        assert_eq!(status, 409, "{form:?}: {body}");
        assert!(body.contains("at least one owner"), "{body}");
    }
    assert_eq!(role_of(&app, "owner@a.example"), ["owner"]);

    // With a second owner, the first may step down.
    let (status, _) = change(
        &app,
        &owner,
        &a,
        &dev_id,
        &[("action", "role"), ("role", "owner")],
    )
    .await;
    assert_eq!(status, 303);
    let (status, _) = change(
        &app,
        &owner,
        &a,
        &owner_id,
        &[("action", "role"), ("role", "developer")],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(role_of(&app, "owner@a.example"), ["developer"]);
    // …and the new owner removes them: signed out at once, no way back in.
    let (status, _) = change(&app, &dev, &a, &owner_id, &[("action", "remove")]).await;
    assert_eq!(status, 303);
    assert!(role_of(&app, "owner@a.example").is_empty());
    let (status, _, location) = get(&app, &owner, &format!("/console/tenants/{a}")).await;
    assert_eq!((status, location.as_deref()), (303, Some("/console/login")));
    let c = client();
    let form = c
        .get(format!("{}/console/login", app.address))
        .send()
        .await
        .unwrap();
    let login_cookie = crate::console::set_cookie(&form, "postline_console_login")
        .unwrap()
        .0;
    let csrf = csrf_of(&form.text().await.unwrap());
    let r = c
        .post(format!("{}/console/login", app.address))
        .header("cookie", login_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", "owner@a.example"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 303, "a removed user cannot sign in");

    let audit = texts(
        &app,
        &format!(
            "SELECT action || ' ' || (changes->>'email') AS v FROM audit_log \
             WHERE tenant_id = '{a}' AND action LIKE 'console_user.%' \
             AND action <> 'console_user.created' ORDER BY at"
        ),
    );
    assert_eq!(
        audit,
        [
            "console_user.role_changed dev@a.example",
            "console_user.role_changed dev@a.example",
            "console_user.role_changed owner@a.example",
            "console_user.removed owner@a.example",
        ]
    );
}

#[tokio::test]
async fn another_tenants_member_looks_not_found_and_admins_manage_any_team() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "A").await;
    let b = tenant(&app, "B").await;
    user(&app, "owner@a.example", Role::Owner, Some(&a)).await;
    user(&app, "owner@b.example", Role::Owner, Some(&b)).await;
    user(&app, "dev@b.example", Role::Developer, Some(&b)).await;
    user(&app, "admin@platform.example", Role::Admin, None).await;
    let (owner_a, _) = sign_in(&app, "owner@a.example", &[]).await;
    let (admin, _) = sign_in(&app, "admin@platform.example", &[]).await;
    let dev_b = id_of(&app, "dev@b.example");
    let admin_id = id_of(&app, "admin@platform.example");

    // B's member through A's page, and through B's page: both not found.
    for t in [&a, &b] {
        for form in [
            vec![("action", "remove")],
            vec![("action", "role"), ("role", "viewer")],
        ] {
            let (status, body) = change(&app, &owner_a, t, &dev_b, &form).await;
            assert_eq!(status, 404, "{t} {form:?}: {body}");
        }
    }
    // An admin is no tenant's member.
    let (status, _) = change(&app, &admin, &a, &admin_id, &[("action", "remove")]).await;
    assert_eq!(status, 404);
    assert_eq!(role_of(&app, "dev@b.example"), ["developer"]);

    let (status, _) = change(
        &app,
        &admin,
        &b,
        &dev_b,
        &[("action", "role"), ("role", "viewer")],
    )
    .await;
    assert_eq!(status, 303);
    let (status, _) = change(&app, &admin, &b, &dev_b, &[("action", "remove")]).await;
    assert_eq!(status, 303);
    assert!(role_of(&app, "dev@b.example").is_empty());
    let actors = texts(
        &app,
        &format!(
            "SELECT actor_kind || ':' || actor_id AS v FROM audit_log \
             WHERE action = 'console_user.removed' AND tenant_id = '{b}'"
        ),
    );
    assert_eq!(actors, [format!("user:{admin_id}")]);
}

#[tokio::test]
async fn cli_removes_a_user_and_ends_their_sessions_but_keeps_the_last_owner() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "A").await;
    user(&app, "owner@a.example", Role::Owner, Some(&a)).await;
    user(&app, "dev@a.example", Role::Developer, Some(&a)).await;
    user(&app, "admin@platform.example", Role::Admin, None).await;
    let (dev, _) = sign_in(&app, "dev@a.example", &[]).await;
    let (admin, _) = sign_in(&app, "admin@platform.example", &[]).await;

    let out = cli(&app, &["user", "remove", "--email", "Dev@A.example"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed console user dev@a.example"));
    let (status, _, location) = get(&app, &dev, "/console/messages").await;
    assert_eq!((status, location.as_deref()), (303, Some("/console/login")));

    let out = cli(&app, &["user", "remove", "--email", "owner@a.example"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one owner"));
    assert_eq!(role_of(&app, "owner@a.example"), ["owner"]);
    let out = cli(&app, &["user", "remove", "--email", "nobody@a.example"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no console user nobody@a.example"));

    let out = cli(
        &app,
        &["user", "remove", "--email", "admin@platform.example"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _, _) = get(&app, &admin, "/console/tenants").await;
    assert_eq!(status, 303, "the admin's session ended");
    let audit = texts(
        &app,
        "SELECT actor_kind || ' ' || (changes->>'email') AS v FROM audit_log \
         WHERE action = 'console_user.removed' ORDER BY at",
    );
    assert_eq!(audit, ["cli dev@a.example", "cli admin@platform.example"]);
}
