//! The web console without a browser (issue 17): every console route signed
//! out, the sign-in form (cookies, CSRF, throttling), sign-out everywhere,
//! The browser journey is in `console_browser.rs`; tenant users' isolation
//! and roles, audit entries naming the user and the CLI in `console_users.rs`.

use postline::console::users::{self, Role};
use postline::routes::{self, Access};
use postline::tenants::model::TenantRef;

use crate::common::TestApp;

pub const PASSWORD: &str = "correct horse battery";

/// A client that shows redirects instead of following them, without a jar.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Creates a console user with a password (the library path of the CLI).
pub async fn user(app: &TestApp, email: &str, role: Role, tenant: Option<&str>) {
    users::create(
        app.pool(),
        &postline::audit::Actor::cli(),
        email,
        role,
        tenant.map(TenantRef::parse),
        Some(PASSWORD),
        3600,
    )
    .await
    .expect("console user");
}

/// Runs the `postline` binary against the test app's database.
pub fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_postline"));
    for (k, _) in std::env::vars() {
        if k.starts_with("POSTLINE") || k == "DATABASE_URL" {
            cli.env_remove(k);
        }
    }
    cli.args(args)
        .env("DATABASE_URL", &app.db_url)
        .env(
            "POSTLINE__SECURITY__MASTER_KEY",
            app.state.settings.security.master_key.expose(),
        )
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// The value of `name="csrf"` in a page.
pub fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// `name=value` of a Set-Cookie header named `name`, and the whole header.
pub fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_string(), v.to_string()))
}

/// Signs in through the form; the session cookie (`name=value`) and the
/// Set-Cookie header it came in.
pub async fn sign_in(app: &TestApp, email: &str, headers: &[(&str, &str)]) -> (String, String) {
    let c = client();
    let mut form = c.get(format!("{}/console/login", app.address));
    for (k, v) in headers {
        form = form.header(*k, *v);
    }
    let form = form.send().await.unwrap();
    assert_eq!(form.status(), 200);
    let (login_cookie, _) = set_cookie(&form, "postline_console_login").expect("login cookie");
    let csrf = csrf_of(&form.text().await.unwrap());
    let mut post = c
        .post(format!("{}/console/login", app.address))
        .header("cookie", login_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", email),
            ("password", PASSWORD),
        ]);
    for (k, v) in headers {
        post = post.header(*k, *v);
    }
    let r = post.send().await.unwrap();
    assert_eq!(r.status(), 303, "sign-in of {email}");
    set_cookie(&r, "postline_console").expect("session cookie")
}

pub async fn get(app: &TestApp, cookie: &str, path: &str) -> (u16, String, Option<String>) {
    let r = client()
        .get(format!("{}{path}", app.address))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (status, r.text().await.unwrap(), location)
}

pub async fn post(app: &TestApp, cookie: &str, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let r = client()
        .post(format!("{}{path}", app.address))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn every_console_route_signed_out_redirects_or_refuses() {
    let app = TestApp::spawn().await;
    let console: Vec<_> = routes::all()
        .into_iter()
        .filter(|e| e.access == Access::Console)
        .collect();
    assert!(console.len() >= 25, "{} console routes", console.len());
    let c = client();
    for e in &console {
        let path = e
            .path
            .replace("{id}", "00000000-0000-4000-8000-000000000001")
            .replace("{token}", "not-a-token");
        let url = format!("{}{path}", app.address);
        let r = match e.method.as_str() {
            "GET" => c.get(&url).send().await.unwrap(),
            _ => c.post(&url).form(&[("x", "1")]).send().await.unwrap(),
        };
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let csp = r
            .headers()
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_string());
        assert!(
            csp.is_some_and(|v| v.contains("default-src 'none'")),
            "{} {path}: CSP",
            e.method
        );
        match (e.method.as_str(), e.path) {
            ("GET", "/console/login") => assert_eq!(status, 200),
            // The base URL leads to the console, which asks for a sign-in.
            ("GET", "/") => {
                assert_eq!(status, 303, "GET /");
                assert_eq!(location.as_deref(), Some("/console"));
            }
            // An unknown one-time link is a page that does not exist.
            ("GET", "/console/invite/{token}") => assert_eq!(status, 404),
            ("GET", _) => {
                assert_eq!(status, 303, "GET {path}");
                assert_eq!(location.as_deref(), Some("/console/login"), "GET {path}");
            }
            _ => assert_eq!(status, 403, "POST {path} without a session or token"),
        }
    }
    // An unknown console path is the JSON API's 404, an existing one never is.
    let r = c
        .get(format!("{}/console/nothing-here", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn sign_in_sets_strict_cookies_and_forms_need_the_session_token() {
    let app = TestApp::spawn_with(|s| {
        s.console.login_failures_per_minute = 3;
        s.auth.trust_x_forwarded_for = true;
    })
    .await;
    user(&app, "admin@example.com", Role::Admin, None).await;

    let (cookie, header) = sign_in(&app, "Admin@Example.com", &[]).await;
    let h = header.to_ascii_lowercase();
    assert!(
        h.contains("httponly") && h.contains("samesite=strict") && h.contains("path=/console"),
        "{header}"
    );
    assert!(
        !h.contains("secure"),
        "plain HTTP: no Secure flag: {header}"
    );
    let (_, tls_header) =
        sign_in(&app, "admin@example.com", &[("x-forwarded-proto", "https")]).await;
    assert!(
        tls_header.to_ascii_lowercase().contains("secure"),
        "{tls_header}"
    );

    let (status, page, _) = get(&app, &cookie, "/console/tenants").await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&page);
    // No token, a wrong token: 403 and nothing created.
    for form in [
        vec![("name", "Nope")],
        vec![("csrf", "wrong"), ("name", "Nope")],
    ] {
        let (status, _) = post(&app, &cookie, "/console/tenants", &form).await;
        assert_eq!(status, 403);
    }
    let r = app.get("/v1/tenants", &app.admin_key).await;
    assert_eq!(r.json["data"].as_array().unwrap().len(), 0, "{}", r.text);
    let (status, _) = post(
        &app,
        &cookie,
        "/console/tenants",
        &[("csrf", &csrf), ("name", "Acme")],
    )
    .await;
    assert_eq!(status, 303);
    let r = app.get("/v1/tenants", &app.admin_key).await;
    assert_eq!(r.json["data"][0]["name"], "Acme");
    // Audit entries name the user.
    let r = app.get("/v1/audit-log", &app.admin_key).await;
    let entry = r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "tenant.created")
        .cloned()
        .expect("audit entry");
    assert_eq!(entry["actor"]["kind"], "user", "{entry}");

    // A form over the size bound: 413 before anything is parsed.
    let big = "x".repeat(70 * 1024);
    let (status, _) = post(
        &app,
        &cookie,
        "/console/tenants",
        &[("csrf", &csrf), ("name", &big)],
    )
    .await;
    assert_eq!(status, 413);

    // The sign-in form needs its own token; wrong passwords are throttled.
    let r = client()
        .post(format!("{}/console/login", app.address))
        .form(&[("email", "admin@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let login = client()
        .get(format!("{}/console/login", app.address))
        .send()
        .await
        .unwrap();
    let (login_cookie, _) = set_cookie(&login, "postline_console_login").unwrap();
    let token = csrf_of(&login.text().await.unwrap());
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = client()
            .post(format!("{}/console/login", app.address))
            .header("cookie", &login_cookie)
            .form(&[
                ("csrf", token.as_str()),
                ("email", "admin@example.com"),
                ("password", "wrong password!"),
            ])
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429]);
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_session() {
    let app = TestApp::spawn().await;
    user(&app, "admin@example.com", Role::Admin, None).await;
    let (one, _) = sign_in(&app, "admin@example.com", &[]).await;
    let (two, _) = sign_in(&app, "admin@example.com", &[]).await;
    let (_, page, _) = get(&app, &one, "/console/queue").await;
    assert!(page.contains("Queue and health"));
    // Sign out of one: the other stays.
    let (status, _) = post(&app, &one, "/console/logout", &[("csrf", &csrf_of(&page))]).await;
    assert_eq!(status, 303);
    assert_eq!(get(&app, &one, "/console/queue").await.0, 303);
    let (status, page, _) = get(&app, &two, "/console/queue").await;
    assert_eq!(status, 200);
    let (_, three_page, _) = {
        let (three, _) = sign_in(&app, "admin@example.com", &[]).await;
        let r = get(&app, &three, "/console/queue").await;
        post(
            &app,
            &two,
            "/console/logout",
            &[("csrf", &csrf_of(&page)), ("everywhere", "1")],
        )
        .await;
        assert_eq!(
            get(&app, &three, "/console/queue").await.0,
            303,
            "everywhere"
        );
        r
    };
    assert!(three_page.contains("Queue and health"));
    assert_eq!(get(&app, &two, "/console/queue").await.0, 303);
}
