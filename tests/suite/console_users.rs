//! Console users (issue 17): tenant users see only their tenant and what
//! their role allows, changes are audited as the user, and `postline user
//! create` makes admins and tenant users (with a one-time link).

use postline::console::users::Role;
use serde_json::json;

use crate::common::TestApp;
use crate::console::{cli, client, csrf_of, get, post, set_cookie, sign_in, user, PASSWORD};

#[tokio::test]
async fn tenant_users_see_only_their_tenant_and_what_their_role_allows() {
    let app = TestApp::spawn().await;
    let a = app.create_tenant(json!({"name": "A"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = app.create_tenant(json!({"name": "B"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let key_b = app.tenant_key(&b, &["send"]).await;
    let sent = app
        .post(
            "/v1/emails",
            &key_b,
            json!({"from": "x@b.example", "to": "y@example.com",
        "subject": "B's mail", "text": "hi"}),
        )
        .await;
    assert_eq!(sent.status, 202, "{}", sent.text);
    let b_mail = sent.json["id"].as_str().unwrap().to_string();
    user(&app, "owner@a.example", Role::Owner, Some(&a)).await;
    user(&app, "viewer@a.example", Role::Viewer, Some(&a)).await;
    let (owner, _) = sign_in(&app, "owner@a.example", &[]).await;
    let (viewer, _) = sign_in(&app, "viewer@a.example", &[]).await;

    for path in ["/console/tenants", "/console/queue"] {
        assert_eq!(get(&app, &owner, path).await.0, 403, "{path}");
    }
    for path in [
        format!("/console/tenants/{b}"),
        format!("/console/messages/{b_mail}"),
        format!("/console/messages/{b_mail}/html"),
        format!("/console/messages/{b_mail}?tenant={b}"),
        format!("/console/domains?tenant={b}"),
        format!("/console/keys?tenant={b}"),
        format!("/console/suppressions?tenant={b}"),
    ] {
        let (status, body, _) = get(&app, &owner, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, page, _) = get(&app, &owner, "/console/messages").await;
    assert_eq!(status, 200);
    assert!(!page.contains("B&#x27;s mail") && !page.contains("B's mail"));
    assert_eq!(
        get(&app, &owner, &format!("/console/tenants/{a}")).await.0,
        200
    );

    // Owners manage keys (audited as the user); viewers neither keys nor writes.
    let (_, keys, _) = get(&app, &owner, "/console/keys").await;
    let (status, created) = post(
        &app,
        &owner,
        "/console/keys",
        &[
            ("csrf", &csrf_of(&keys)),
            ("name", "ci"),
            ("permissions[]", "send"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let at = created
        .find("id=\"secret\" value=\"")
        .expect("the secret is shown")
        + 19;
    let secret = created[at..].split('"').next().unwrap().to_string();
    assert!(secret.starts_with("pl_live_"), "{secret}");
    let r = app.get("/v1/emails", &secret).await;
    assert_eq!(r.status, 403, "a send-only key: {}", r.text);
    let (_, again, _) = get(&app, &owner, "/console/keys").await;
    assert!(
        again.contains("ci") && !again.contains(&secret),
        "shown once"
    );
    let mut conn = app.sql_conn();
    use diesel::prelude::*;
    let kinds: Vec<String> = diesel::sql_query(format!(
        "SELECT actor_kind || ':' || actor_id AS v FROM audit_log \
         WHERE action = 'key.created' AND tenant_id = '{a}'"
    ))
    .load::<Text>(&mut conn)
    .unwrap()
    .into_iter()
    .map(|t| t.v)
    .collect();
    let owner_id: Vec<String> = diesel::sql_query(
        "SELECT id::text AS v FROM console_users WHERE email = 'owner@a.example'",
    )
    .load::<Text>(&mut conn)
    .unwrap()
    .into_iter()
    .map(|t| t.v)
    .collect();
    assert_eq!(kinds, [format!("user:{}", owner_id[0])]);
    // OAuth clients on the same page, through the OAuth service: audited as
    // the user too (Actor::key of the console principal).
    let (status, created) = post(
        &app,
        &owner,
        "/console/oauth-clients",
        &[("csrf", &csrf_of(&keys)), ("name", "worker")],
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert!(created.contains("id=\"client-secret\""), "{created}");
    let kinds: Vec<String> = diesel::sql_query(
        "SELECT actor_kind || ':' || actor_id AS v FROM audit_log \
         WHERE action = 'oauth_client.created'",
    )
    .load::<Text>(&mut conn)
    .unwrap()
    .into_iter()
    .map(|t| t.v)
    .collect();
    assert_eq!(kinds, [format!("user:{}", owner_id[0])]);
    assert_eq!(get(&app, &viewer, "/console/keys").await.0, 403);
    let (_, sup, _) = get(&app, &viewer, "/console/suppressions").await;
    let (status, _) = post(
        &app,
        &viewer,
        "/console/suppressions",
        &[("csrf", &csrf_of(&sup)), ("email", "z@example.com")],
    )
    .await;
    assert_eq!(status, 403);
}

#[derive(diesel::QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    v: String,
}

#[tokio::test]
async fn cli_creates_an_admin_and_a_tenant_user_with_a_one_time_link() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant(json!({"name": "CLI"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = |args: &[&str]| cli(&app, args);
    let out = run(&[
        "user",
        "create",
        "--admin",
        "--email",
        "root@example.com",
        "--password",
        PASSWORD,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sign_in(&app, "root@example.com", &[]).await;

    let out = run(&[
        "user",
        "create",
        "--tenant",
        &tenant,
        "--role",
        "developer",
        "--email",
        "dev@example.com",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let link = stdout.lines().last().unwrap().trim().to_string();
    assert!(link.starts_with("/console/invite/"), "{stdout}");
    let bad = run(&[
        "user",
        "create",
        "--tenant",
        &tenant,
        "--role",
        "admin",
        "--email",
        "x@example.com",
    ]);
    assert!(!bad.status.success());

    // The link works once: set the password, then sign in with it.
    let c = client();
    let form = c
        .get(format!("{}{link}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let (login_cookie, _) = set_cookie(&form, "postline_console_login").unwrap();
    let csrf = csrf_of(&form.text().await.unwrap());
    let set = || {
        c.post(format!("{}{link}", app.address))
            .header("cookie", &login_cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("password", PASSWORD),
                ("confirm", PASSWORD),
            ])
    };
    assert_eq!(set().send().await.unwrap().status(), 303);
    assert_eq!(set().send().await.unwrap().status(), 404, "a one-time link");
    let (cookie, _) = sign_in(&app, "dev@example.com", &[]).await;
    assert_eq!(get(&app, &cookie, "/console/messages").await.0, 200);
}
