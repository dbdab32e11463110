//! Templates end to end: CRUD, rendering rules, starter templates, and
//! sending with a template through a real SMTP sink.

use crate::common;

use std::time::Duration;

use common::smtp_sink::SmtpSink;
use common::TestApp;
use diesel::prelude::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

async fn tenant(app: &TestApp, body: Value, perms: &[&str]) -> (String, String) {
    let t = app.create_tenant(body).await;
    let id = t["id"].as_str().unwrap().to_string();
    let key = app.tenant_key(&id, perms).await;
    (id, key)
}

const RW: &[&str] = &["send", "templates:read", "templates:write", "emails:read"];

async fn create(app: &TestApp, key: &str, body: Value) -> Value {
    let r = app.post("/v1/templates", key, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json
}

fn names(page: &Value) -> Vec<String> {
    let mut v: Vec<String> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn new_tenants_start_with_the_starter_templates() {
    let app = TestApp::spawn_with(|s| s.tenants.auto_create = true).await;
    let (id, key) = tenant(&app, json!({"name": "A"}), RW).await;
    let page = app.get("/v1/templates", &key).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(
        names(&page.json),
        vec!["password-reset", "receipt", "verification-code", "welcome"]
    );
    for t in page.json["data"].as_array().unwrap() {
        assert!(!t["subject"].as_str().unwrap().is_empty());
        assert!(t["html"].is_string() && t["text"].is_string(), "{t}");
    }
    let code = app
        .post(
            "/v1/templates/verification-code/render",
            &key,
            json!({"variables": {"app_name": "Acme", "code": "481516", "expires_in": "10 minutes"}}),
        )
        .await;
    assert_eq!(code.status, 200, "{}", code.text);
    assert_eq!(code.json["subject"], "Your Acme verification code: 481516");
    // Admins see them through the tenant path.
    let admin_view = app
        .get(&format!("/v1/tenants/{id}/templates"), &app.admin_key)
        .await;
    assert_eq!(names(&admin_view.json).len(), 4);
    // An auto-created tenant (platform-style send) gets them too.
    let r = app
        .post(
            "/v1/emails",
            &app.admin_key,
            json!({"tenant_id": "auto-one", "from": "a@b.test", "to": "c@d.test",
                   "template": "welcome",
                   "variables": {"name": "Bo", "app_name": "Acme", "action_url": "https://x.test"}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let listed = app
        .get("/v1/tenants/auto-one/templates", &app.admin_key)
        .await;
    assert_eq!(names(&listed.json).len(), 4, "{}", listed.text);
}

/// `postline templates install-starters`: existing tenants get the starters
/// they lack, their own templates stay as they are, deleted tenants get
/// nothing, and a second run adds nothing.
#[tokio::test]
async fn install_starters_backfills_what_tenants_lack_and_nothing_else() {
    let app = TestApp::spawn().await;
    let (_, key_a) = tenant(&app, json!({"name": "A"}), RW).await;
    let (b, key_b) = tenant(&app, json!({"name": "B"}), RW).await;
    let (gone, key_gone) = tenant(&app, json!({"name": "Gone"}), RW).await;
    // As if A, B and Gone predated some starters; A changed another one.
    for (key, name) in [
        (&key_a, "welcome"),
        (&key_a, "receipt"),
        (&key_b, "receipt"),
        (&key_gone, "welcome"),
    ] {
        let r = app.delete(&format!("/v1/templates/{name}"), key).await;
        assert_eq!(r.status, 204, "{}", r.text);
    }
    let r = app
        .patch(
            "/v1/templates/password-reset",
            &key_a,
            json!({"subject": "Ours"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .delete(&format!("/v1/tenants/{gone}"), &app.admin_key)
        .await;
    assert!(r.status == 204 || r.status == 200, "{}", r.text);

    // One tenant only, through the library call.
    let only_b = postline::templates::starter::install_missing(
        &mut app.sql_conn(),
        Some(postline::domain::TenantId(b.parse().unwrap())),
    )
    .unwrap();
    let added: usize = only_b.iter().map(|(_, n)| n).sum();
    assert_eq!(added, 1, "{only_b:?}");
    assert_eq!(names(&app.get("/v1/templates", &key_a).await.json).len(), 2);

    // Every tenant, through the real binary.
    let server = crate::drills::Server::new(&app.db_url, 1, &[]);
    let out = server.cli(&["templates", "install-starters"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("welcome: added to 1 tenant(s)"), "{stdout}");
    assert!(stdout.contains("receipt: added to 1 tenant(s)"), "{stdout}");
    assert!(
        stdout.contains("password-reset: added to 0 tenant(s)"),
        "{stdout}"
    );
    for key in [&key_a, &key_b] {
        assert_eq!(
            names(&app.get("/v1/templates", key).await.json),
            vec!["password-reset", "receipt", "verification-code", "welcome"]
        );
    }
    let own = app.get("/v1/templates/password-reset", &key_a).await;
    assert_eq!(
        own.json["subject"], "Ours",
        "a tenant's own template is kept"
    );
    let n: i64 = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM templates WHERE tenant_id = '{gone}'"
    ))
    .get_result::<Count>(&mut app.sql_conn())
    .unwrap()
    .n;
    assert_eq!(n, 3, "a deleted tenant gets nothing");

    let again = server.cli(&["templates", "install-starters"]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(
        stdout.matches("added to 0 tenant(s)").count(),
        4,
        "{stdout}"
    );
    // A bad tenant id is refused by the CLI, changing nothing.
    let bad = server.cli(&["templates", "install-starters", "--tenant", "nope"]);
    assert!(!bad.status.success());
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[tokio::test]
async fn crud_names_conflicts_and_partial_updates() {
    let app = TestApp::spawn().await;
    let (_, key) = tenant(&app, json!({"name": "A"}), RW).await;
    let t = create(
        &app,
        &key,
        json!({"name": "invoice", "subject": "Invoice {{ n }}", "text": "Due: {{ due }}"}),
    )
    .await;
    let id = t["id"].as_str().unwrap();
    assert_eq!(t["html"], Value::Null);
    let dup = app
        .post(
            "/v1/templates",
            &key,
            json!({"name": "invoice", "subject": "x", "text": "y"}),
        )
        .await;
    assert_eq!(dup.status, 409, "{}", dup.text);
    assert_eq!(dup.json["code"], "conflict");
    // By id or by name.
    assert_eq!(
        app.get(&format!("/v1/templates/{id}"), &key).await.json["name"],
        "invoice"
    );
    assert_eq!(app.get("/v1/templates/invoice", &key).await.json["id"], id);
    // PUT changes only the given fields.
    let r = app
        .put(
            "/v1/templates/invoice",
            &key,
            json!({"html": "<p>{{ due }}</p>"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["subject"], "Invoice {{ n }}");
    assert_eq!(r.json["text"], "Due: {{ due }}");
    assert_eq!(r.json["html"], "<p>{{ due }}</p>");
    // Renaming onto another template's name is a conflict; removing the last body is refused.
    let r = app
        .put("/v1/templates/invoice", &key, json!({"name": "welcome"}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let r = app
        .put(
            "/v1/templates/invoice",
            &key,
            json!({"text": null, "html": null}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    // Names are never UUIDs, and must be simple.
    for bad in [
        "",
        "has space",
        "9b2f3c9e-1d7a-4c3e-9f0a-1b2c3d4e5f60",
        "../x", // standalone-check: not a path
    ] {
        let r = app
            .post(
                "/v1/templates",
                &key,
                json!({"name": bad, "subject": "s", "text": "t"}),
            )
            .await;
        assert_eq!(r.status, 422, "{bad:?}: {}", r.text);
    }
    let r = app
        .post(
            "/v1/templates",
            &key,
            json!({"name": "x", "subject": "s", "text": "t", "extra": 1}),
        )
        .await;
    assert_eq!(r.status, 422, "unknown fields are refused: {}", r.text);
    // Delete.
    assert_eq!(
        app.delete(&format!("/v1/templates/{id}"), &key)
            .await
            .status,
        204
    );
    assert_eq!(
        app.get(&format!("/v1/templates/{id}"), &key).await.status,
        404
    );
    assert_eq!(app.delete("/v1/templates/invoice", &key).await.status, 404);
    // Pagination over the four starters.
    let p1 = app.get("/v1/templates?limit=3", &key).await;
    assert_eq!(p1.json["data"].as_array().unwrap().len(), 3);
    let cursor = p1.json["next_cursor"].as_str().unwrap();
    let p2 = app
        .get(&format!("/v1/templates?limit=3&cursor={cursor}"), &key)
        .await;
    assert_eq!(p2.json["data"].as_array().unwrap().len(), 1);
    assert!(p2.json["next_cursor"].is_null());
}

#[tokio::test]
async fn syntax_errors_are_refused_with_their_line_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (_, key) = tenant(&app, json!({"name": "A"}), RW).await;
    let r = app
        .post(
            "/v1/templates",
            &key,
            json!({"name": "broken", "subject": "ok", "html": "<p>\n{% if x %}\n<b>{{ x }</b>"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["errors"][0]["field"], "html");
    let msg = r.json["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("line 3"), "{msg}");
    assert_eq!(app.get("/v1/templates/broken", &key).await.status, 404);
    let r = app
        .put(
            "/v1/templates/welcome",
            &key,
            json!({"subject": "Hi {{ name"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.json["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("line 1"));
    let w = app.get("/v1/templates/welcome", &key).await;
    assert!(w.json["subject"]
        .as_str()
        .unwrap()
        .starts_with("Welcome to"));
}

#[tokio::test]
async fn render_escapes_html_only_and_names_a_missing_variable() {
    let app = TestApp::spawn().await;
    let (_, key) = tenant(&app, json!({"name": "A"}), RW).await;
    create(
        &app,
        &key,
        json!({"name": "note", "subject": "For {{ who }}", "html": "<p>{{ who }}</p>", "text": "Dear {{ who }},\n{{ body }}"}),
    )
    .await;
    let who = "<script>alert('x')</script> & Co";
    let r = app
        .post(
            "/v1/templates/note/render",
            &key,
            json!({"variables": {"who": who, "body": "b"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["subject"], format!("For {who}"));
    assert_eq!(r.json["text"], format!("Dear {who},\nb"));
    let html = r.json["html"].as_str().unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;") && html.contains("&amp; Co"),
        "{html}"
    );

    let r = app
        .post(
            "/v1/templates/note/render",
            &key,
            json!({"variables": {"who": "Ann"}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["code"], "template_variable_missing");
    assert!(
        r.json["detail"].as_str().unwrap().contains("'body'"),
        "{}",
        r.text
    );
    assert_eq!(r.json["errors"][0]["field"], "variables.body");
    let r = app
        .post("/v1/templates/note/render", &key, json!({"variables": [1]}))
        .await;
    assert_eq!(r.status, 422);
    let r = app.post("/v1/templates/nope/render", &key, json!({})).await;
    assert_eq!(r.status, 404);
}

/// The decoded text/plain and text/html parts of a message.
fn parts(raw: &str) -> (String, String) {
    let all = common::mime_parts(raw);
    let find = |t: &str| {
        all.iter()
            .find(|(ct, _)| ct == t)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("no {t} part in {raw}"))
    };
    (find("text/plain"), find("text/html"))
}

#[tokio::test]
async fn sending_with_a_template_delivers_the_rendered_message() {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let (_, key) = tenant(
        &app,
        json!({"name": "Acme", "domain": "acme.test"}),
        &["send", "emails:read"],
    )
    .await;
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "hello@acme.test", "to": "bo@example.com", "template": "password-reset",
                   "variables": {"name": "Bo <b>", "app_name": "Acme", "expires_in": "30 minutes",
                                 "reset_url": "https://acme.test/reset?t=1&u=2"}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    let got = sink.wait_for(1, WAIT).await;
    let raw = got[0].text();
    assert!(raw.contains("Subject: Reset your Acme password"), "{raw}");
    let (plain, html) = parts(&raw);
    assert!(plain.contains("Hi Bo <b>,"), "text part unescaped: {plain}");
    assert!(plain.contains("https://acme.test/reset?t=1&u=2"), "{plain}");
    assert!(
        html.contains("Hi Bo &lt;b&gt;,"),
        "html part escaped: {html}"
    );
    assert!(
        html.contains("https://acme.test/reset?t=1&amp;u=2"),
        "{html}"
    );
    let stored = app.get(&format!("/v1/emails/{id}"), &key).await;
    assert_eq!(stored.json["subject"], "Reset your Acme password");

    // Explicit parts override the template's.
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": "hello@acme.test", "to": "cy@example.com", "template": "welcome",
                   "subject": "Custom subject", "text": "Plain override",
                   "variables": {"name": "Cy", "app_name": "Acme", "action_url": "https://acme.test"}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let got = sink.wait_for(2, WAIT).await;
    let m = got
        .iter()
        .find(|m| m.rcpt_to == vec!["cy@example.com"])
        .unwrap()
        .text();
    assert!(m.contains("Subject: Custom subject"), "{m}");
    let (plain, html) = parts(&m);
    assert_eq!(plain.trim(), "Plain override");
    assert!(
        html.contains("Welcome to Acme, Cy!"),
        "html still from the template: {html}"
    );
}

#[tokio::test]
async fn bad_template_sends_are_refused_and_queue_nothing() {
    let app = TestApp::spawn().await;
    let (_, key) = tenant(&app, json!({"name": "A"}), &["send"]).await;
    let (_, other) = tenant(&app, json!({"name": "B"}), RW).await;
    create(
        &app,
        &other,
        json!({"name": "b-only", "subject": "s", "text": "t"}),
    )
    .await;
    let base = json!({"from": "a@a.test", "to": "x@y.test"});
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let r = app
        .post(
            "/v1/emails",
            &key,
            with(json!({"template": "welcome", "variables": {"name": "x"}})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["code"], "template_variable_missing");
    assert!(r.json["errors"][0]["field"]
        .as_str()
        .unwrap()
        .starts_with("variables."));
    // Another tenant's template is unknown here.
    let r = app
        .post("/v1/emails", &key, with(json!({"template": "b-only"})))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["errors"][0]["field"], "template");
    let r = app
        .post(
            "/v1/emails",
            &key,
            with(json!({"subject": "s", "text": "t", "variables": {"a": 1}})),
        )
        .await;
    assert_eq!(r.status, 422, "variables need a template: {}", r.text);
    let r = app
        .post(
            "/v1/emails",
            &key,
            with(json!({"template": "welcome", "variables": "nope"})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    // In a batch, the failing index is named.
    let ok = with(json!({"subject": "s", "text": "t"}));
    let bad = with(json!({"template": "welcome", "variables": {"name": "x", "app_name": "y"}}));
    let r = app
        .post("/v1/emails/batch", &key, json!({"emails": [ok, bad]}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.json["errors"][0]["field"],
        "emails[1].variables.action_url"
    );
    use postline::db::schema::emails::dsl::*;
    let n: i64 = emails.count().get_result(&mut app.sql_conn()).unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn isolation_and_permissions() {
    let app = TestApp::spawn().await;
    let (a, key_a) = tenant(&app, json!({"name": "A"}), RW).await;
    let (_, key_b) = tenant(&app, json!({"name": "B"}), RW).await;
    let (_, send_only) = tenant(&app, json!({"name": "C"}), &["send"]).await;
    let (_, read_only) = tenant(&app, json!({"name": "D"}), &["templates:read"]).await;
    let t = create(
        &app,
        &key_a,
        json!({"name": "mine", "subject": "s", "text": "t"}),
    )
    .await;
    let id = t["id"].as_str().unwrap();
    for (m, path) in [
        ("GET", format!("/v1/templates/{id}")),
        ("PUT", format!("/v1/templates/{id}")),
        ("DELETE", format!("/v1/templates/{id}")),
        ("POST", format!("/v1/templates/{id}/render")),
        ("GET", "/v1/templates/mine".to_string()),
    ] {
        let r = app.request(m, &path, Some(&key_b), Some(json!({}))).await;
        assert_eq!(r.status, 404, "{m} {path}: {}", r.text);
    }
    assert_eq!(app.get("/v1/templates", &send_only).await.status, 403);
    let r = app
        .post(
            "/v1/templates",
            &read_only,
            json!({"name": "x", "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json["code"], "insufficient_permission");
    assert_eq!(app.get("/v1/templates", &read_only).await.status, 200);
    let r = app.get("/v1/templates", &app.admin_key).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json["code"], "tenant_key_required");
    assert_eq!(
        app.get(&format!("/v1/tenants/{a}/templates/{id}"), &key_a)
            .await
            .json["code"],
        "admin_only"
    );
    let r = app
        .get(&format!("/v1/tenants/{a}/templates/mine"), &app.admin_key)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .post(
            &format!("/v1/tenants/{a}/templates"),
            &app.admin_key,
            json!({"name": "by-admin", "subject": "s", "html": "<p>h</p>"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(app.get("/v1/templates/by-admin", &key_a).await.status, 200);
}
