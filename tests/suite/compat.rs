//! The Resend- and Postmark-compatible APIs (issue 14), driven by the
//! official SDKs (Node `resend` and `postmark`, Python `resend` and
//! `postmarker`, pinned in tests/compat/ and installed by `deploy/dev test`)
//! against a running Postline over real HTTP, with a real SMTP sink; plus
//! the forms and bounds the SDKs of today do not send.

use crate::common;

mod byte_lists;
mod postmark;

use std::process::Command;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use common::smtp_sink::SmtpSink;
use common::TestApp;
use serde_json::{json, Value};

pub(crate) const WAIT: Duration = Duration::from_secs(20);
pub(crate) const FROM: &str = "Acme <noreply@acme.example>";
pub(crate) const TO: &str = "rcpt@dest.example";

fn compat_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

/// Whether the SDKs of one runtime are here. When `deploy/dev test` could
/// not install them it says why in `reason_var`: the test prints that and
/// skips; anything else missing is a broken setup and fails.
fn available(reason_var: &str, probe: &mut Command) -> bool {
    if let Ok(why) = std::env::var(reason_var) {
        println!("SKIPPED: {why} ({reason_var})");
        eprintln!("SKIPPED: {why} ({reason_var})");
        return false;
    }
    let ok = probe.output().map(|o| o.status.success()).unwrap_or(false);
    assert!(
        ok,
        "the compat SDKs are not installed: run the suite with `deploy/dev test` (it installs tests/compat/)"
    );
    true
}

pub(crate) fn node_ready() -> bool {
    let dir = compat_dir();
    available(
        "POSTLINE_COMPAT_NODE_MISSING",
        Command::new("node")
            .current_dir(&dir)
            .args(["-e", "require('resend'); require('postmark')"]),
    )
}

pub(crate) fn python_ready() -> bool {
    available(
        "POSTLINE_COMPAT_PY_MISSING",
        Command::new("python3").args(["-c", "import resend, postmarker"]),
    )
}

/// Runs a driver script and parses the JSON line it prints.
pub(crate) async fn drive(program: &str, script: &str, env: &[(&str, String)]) -> Value {
    let mut cmd = tokio::process::Command::new(program);
    cmd.current_dir(compat_dir()).arg(script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("driver finished in time")
        .expect("driver started");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{script} printed {stdout}: {e}"))
}

pub(crate) async fn app_with_sink() -> (TestApp, SmtpSink, String, String) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_serving(sink.port(), |_| {}).await;
    let t = app.create_tenant(json!({"name": "Compat"})).await;
    let tenant = t["id"].as_str().unwrap().to_string();
    let key = app.tenant_key(&tenant, &["send", "emails:read"]).await;
    (app, sink, tenant, key)
}

fn later(mins: i64) -> String {
    (Utc::now() + chrono::Duration::minutes(mins)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn base_env(app: &TestApp, key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("KEY", key.to_string()),
        ("FROM", FROM.to_string()),
        ("TO", TO.to_string()),
        ("LATER", later(60)),
        ("LATER2", later(120)),
    ]
    .into_iter()
    .chain([("POSTLINE_PORT", app.port.to_string())])
    .collect()
}

async fn v1_status(app: &TestApp, key: &str, id: &str) -> Value {
    let r = app.get(&format!("/v1/emails/{id}"), key).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

/// The `ErrorCode` of each entry of a Postmark batch answer.
pub(crate) fn error_codes(v: &Value) -> Vec<u64> {
    let entries = v.as_array().unwrap_or_else(|| panic!("a list: {v}"));
    entries
        .iter()
        .filter_map(|e| e["ErrorCode"].as_u64())
        .collect()
}

fn same_instant(a: &Value, b: &str) {
    let a: chrono::DateTime<Utc> = a.as_str().expect("a time").parse().unwrap();
    assert_eq!(a, b.parse::<chrono::DateTime<Utc>>().unwrap());
}

#[tokio::test]
async fn node_resend_sdk_sends_batches_reads_reschedules_and_cancels() {
    if !node_ready() {
        return;
    }
    let (app, sink, _, key) = app_with_sink().await;
    let mut env = base_env(&app, &key);
    // A trailing slash: the SDK then asks for `//emails`.
    env.push(("POSTLINE_URL", format!("{}/", app.address)));
    let (l1, l2) = (env[3].1.clone(), env[4].1.clone());
    let out = drive("node", "resend_sdk.mjs", &env).await;
    let id = out["sent"]["data"]["id"]
        .as_str()
        .expect("sent id")
        .to_string();
    assert_eq!(out["sent"]["error"], Value::Null, "{out}");
    assert_eq!(
        out["replayed"]["data"]["id"],
        id.as_str(),
        "Idempotency-Key replays"
    );
    assert_eq!(
        out["batch"]["data"]["data"].as_array().unwrap().len(),
        2,
        "{out}"
    );
    let got = &out["got"]["data"];
    assert_eq!(got["object"], "email");
    assert_eq!(got["subject"], "node resend");
    assert_eq!(got["to"], json!([TO]));
    assert_eq!(got["tags"], json!([{"name": "sdk", "value": "node"}]));
    assert_eq!(got["html"], "<p>hi</p>");
    let list = &out["list"]["data"];
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert_eq!(list["has_more"], true);
    let sched = out["scheduled"]["data"]["id"].as_str().unwrap();
    same_instant(&out["got_scheduled"]["data"]["scheduled_at"], &l2);
    assert_eq!(out["got_scheduled"]["data"]["last_event"], "scheduled");
    assert_ne!(l1, l2);
    assert_eq!(out["canceled"]["data"]["id"], sched);
    assert_eq!(
        out["cancel_again"]["error"]["name"], "email_not_cancelable",
        "{out}"
    );
    assert_eq!(out["cancel_again"]["error"]["statusCode"], 409);
    assert_eq!(out["invalid"]["error"]["name"], "validation_error", "{out}");
    assert_eq!(out["invalid"]["error"]["statusCode"], 422);
    assert_eq!(out["missing"]["error"]["name"], "not_found");
    assert_eq!(out["bad_key"]["error"]["name"], "invalid_api_key");
    assert_eq!(v1_status(&app, &key, sched).await["status"], "canceled");
    // Sent: the message (two attachments, both forms the SDK sends) and the batch.
    let got = sink.wait_for(3, WAIT).await;
    let text = got
        .iter()
        .map(|m| m.text())
        .find(|t| t.contains("node resend"))
        .expect("the single send arrived");
    let bodies: Vec<String> = common::mime_parts(&text)
        .into_iter()
        .map(|p| p.1.trim_end().to_string())
        .collect();
    assert!(
        bodies.iter().any(|b| b == "node buffer"),
        "Buffer attachment: {bodies:?}"
    );
    assert!(
        bodies.iter().any(|b| b == "node base64"),
        "base64 attachment: {bodies:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.count(), 3, "the replayed send was not sent twice");
}

#[tokio::test]
async fn python_resend_sdk_sends_batches_reads_reschedules_and_cancels() {
    if !python_ready() {
        return;
    }
    let (app, sink, _, key) = app_with_sink().await;
    let mut env = base_env(&app, &key);
    env.push(("RESEND_API_URL", format!("{}/", app.address)));
    let l2 = env[4].1.clone();
    let out = drive("python3", "resend_sdk.py", &env).await;
    let id = out["sent"]["id"].as_str().expect("sent id");
    assert_eq!(out["batch"]["data"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(out["got"]["id"], id);
    assert_eq!(out["got"]["object"], "email");
    assert_eq!(out["got"]["text"], "hi");
    same_instant(&out["got_scheduled"]["scheduled_at"], &l2);
    let sched = out["scheduled"]["id"].as_str().unwrap();
    assert_eq!(out["updated"]["id"], sched);
    assert_eq!(out["canceled"]["id"], sched);
    assert_eq!(out["cancel_again"]["type"], "email_not_cancelable", "{out}");
    assert_eq!(out["cancel_again"]["code"], 409);
    assert_eq!(out["invalid"]["type"], "validation_error", "{out}");
    assert_eq!(out["invalid"]["code"], 422);
    assert_eq!(out["bad_key"]["type"], "invalid_api_key", "{out}");
    assert_eq!(v1_status(&app, &key, sched).await["status"], "canceled");
    let got = sink.wait_for(3, WAIT).await;
    let text = got
        .iter()
        .map(|m| m.text())
        .find(|t| t.contains("python resend"))
        .expect("the single send arrived");
    // list(bytes) and base64: both arrive as the same bytes.
    let bodies: Vec<String> = common::mime_parts(&text)
        .into_iter()
        .map(|p| p.1.trim_end().to_string())
        .collect();
    assert!(
        bodies.iter().any(|b| b == "python bytes"),
        "list of bytes: {bodies:?}"
    );
    assert!(
        bodies.iter().any(|b| b == "python base64"),
        "base64: {bodies:?}"
    );
}

#[tokio::test]
async fn postmark_sdks_send_and_batch_and_get_postmark_errors() {
    let (node, python) = (node_ready(), python_ready());
    if !node && !python {
        return;
    }
    let (app, sink, _, key) = app_with_sink().await;
    let mut expected = 0;
    if node {
        let mut env = base_env(&app, &key);
        env.push(("POSTLINE_HOST", format!("127.0.0.1:{}", app.port)));
        let out = drive("node", "postmark_sdk.js", &env).await;
        assert_eq!(out["sent"]["ErrorCode"], 0, "{out}");
        assert_eq!(out["sent"]["Message"], "OK");
        let id = out["sent"]["MessageID"].as_str().unwrap();
        let detail = v1_status(&app, &key, id).await;
        assert_eq!(detail["tags"], json!({"tag": "welcome", "plan": "pro"}));
        assert_eq!(detail["to"].as_array().unwrap().len(), 2, "{detail}");
        assert_eq!(out["batch"].as_array().unwrap().len(), 2, "{out}");
        assert_eq!(error_codes(&out["mixed"]), [0, 300, 0], "{out}");
        assert!(out["mixed"][1]["MessageID"].is_null(), "{out}");
        assert_eq!(out["invalid"]["code"], 300, "{out}");
        assert_eq!(out["invalid"]["status"], 422);
        assert_eq!(out["bad_key"]["status"], 401, "{out}");
        assert_eq!(out["bad_key"]["name"], "InvalidAPIKeyError");
        expected += 5;
        let got = sink.wait_for(expected, WAIT).await;
        let m = got
            .iter()
            .find(|m| m.text().contains("postmark.js"))
            .unwrap();
        assert_eq!(m.rcpt_to.len(), 2);
        assert!(m.text().contains("X-Campaign: spring"));
    }
    if python {
        let mut env = base_env(&app, &key);
        env.push(("POSTLINE_URL", app.address.clone()));
        let out = drive("python3", "postmarker_sdk.py", &env).await;
        assert_eq!(out["sent"]["ErrorCode"], 0, "{out}");
        assert_eq!(out["batch"].as_array().unwrap().len(), 2, "{out}");
        assert_eq!(error_codes(&out["mixed"]), [0, 300, 0], "{out}");
        assert_eq!(out["invalid"]["code"], 300, "{out}");
        expected += 5;
        let got = sink.wait_for(expected, WAIT).await;
        assert!(!got.iter().any(|m| m.text().contains("mixed 2")));
    }
}

/// The forms today's SDKs no longer send, the bounds, and the headers.
#[tokio::test]
async fn raw_forms_bounds_and_rate_limit_headers() {
    let app = TestApp::spawn().await;
    let t = app
        .create_tenant(json!({"name": "Raw", "rate_limit": {"requests_per_minute": 1000}}))
        .await;
    let key = app
        .tenant_key(t["id"].as_str().unwrap(), &["send", "emails:read"])
        .await;
    let base = json!({"from": FROM, "to": TO, "subject": "s", "text": "t"});
    let mut buffer = base.clone();
    buffer["attachments"] =
        json!([{"filename": "n.txt", "content": {"type": "Buffer", "data": [104, 105]}}]);
    let r = app.post("/emails", &key, buffer).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json["id"].as_str().unwrap();
    let stored: Vec<String> = {
        use diesel::prelude::*;
        use postline::db::schema::emails::dsl as e;
        let v: Value = e::emails
            .filter(e::id.eq(uuid::Uuid::parse_str(id).unwrap()))
            .select(e::attachments)
            .first(&mut app.sql_conn())
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["content"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(stored, ["aGk="], "the Buffer form is stored as base64");
    assert_eq!(r.header("ratelimit-limit").as_deref(), Some("1000"));
    assert!(r.header("ratelimit-remaining").is_some());
    // Repeated slashes are merged on every route, not only the compat ones.
    let r = app.get(&format!("//v1//emails/{id}"), &key).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Remote attachments (a URL to fetch) are refused, in Resend's shape.
    let mut remote = base.clone();
    remote["attachments"] = json!([{"filename": "x", "path": "http://169.254.169.254/"}]);
    let r = app.post("/emails", &key, remote).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["name"], "validation_error");
    assert!(r.json["message"]
        .as_str()
        .unwrap()
        .contains("attachments[0].path"));
    // Resend's `react` needs a JavaScript renderer: the message says what to
    // send instead, in the single and the batch form.
    let mut react = base.clone();
    react["react"] = json!({"type": "div"});
    let r = app.post("/emails", &key, react.clone()).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let says = |r: &common::Resp| {
        let m = r.json["message"].as_str().unwrap_or_default();
        m.contains("react") && m.contains("render") && m.contains("html")
    };
    assert!(says(&r), "{}", r.text);
    let r = app.post("/emails/batch", &key, json!([react])).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(says(&r), "{}", r.text);
    // No key: Resend's missing_api_key; an admin key: refused.
    let r = app
        .request("POST", "/emails", None, Some(base.clone()))
        .await;
    assert_eq!(
        (r.status, r.json["name"].as_str()),
        (401, Some("missing_api_key"))
    );
    let r = app.post("/emails", &app.admin_key, base.clone()).await;
    assert_eq!(r.status, 403, "{}", r.text);
    // Resend batch: 100 is the bound (as Resend's), all or nothing.
    let r = app
        .post("/emails/batch", &key, Value::Array(vec![base.clone(); 101]))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["name"], "validation_error");
    let r = app
        .post("/emails/batch", &key, json!({"emails": [base.clone()]}))
        .await;
    assert_eq!(r.status, 422, "a batch is a list: {}", r.text);
    // Postmark batch: 500 is the bound.
    let pm = |n: usize| {
        let one = json!({"From": FROM, "To": TO, "Subject": "s", "TextBody": "t"});
        Value::Array(vec![one; n])
    };
    let send_pm = |body: Value| {
        let req = app
            .client
            .post(format!("{}/email/batch", app.address))
            .header("X-Postmark-Server-Token", &key)
            .json(&body);
        async move { TestApp::read(req.send().await.unwrap()).await }
    };
    let r = send_pm(pm(501)).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["ErrorCode"], 300);
    let before = app.get("/emails?limit=100", &key).await.json["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, 1, "the refused batch queued nothing");
    // A query string that does not parse is Resend's 422 too (found by
    // schemathesis: it was problem JSON).
    let r = app.get("/emails?limit=9223372036854775808", &key).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["statusCode"], 422, "{}", r.text);
    assert_eq!(r.json["name"], "validation_error", "{}", r.text);
    let r = send_pm(pm(500)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json.as_array().unwrap().len(), 500);
    assert!(r
        .json
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["ErrorCode"] == 0));
}

/// Past the tenant's `requests_per_minute`: Resend's 429 with Retry-After
/// and Resend's rate-limit headers; Postmark's 429 with ErrorCode 429.
#[tokio::test]
async fn rate_limited_requests_get_the_vendors_429() {
    let app = TestApp::spawn().await;
    let t = app
        .create_tenant(json!({"name": "Slow", "rate_limit": {"requests_per_minute": 1}}))
        .await;
    let key = app.tenant_key(t["id"].as_str().unwrap(), &["send"]).await;
    let body = json!({"from": FROM, "to": TO, "subject": "s", "text": "t"});
    let r = app.post("/emails", &key, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("ratelimit-remaining").as_deref(), Some("0"));
    let r = app.post("/emails", &key, body).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.json["name"], "rate_limit_exceeded");
    assert_eq!(r.json["statusCode"], 429);
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("ratelimit-limit").as_deref(), Some("1"));
    let pm = json!({"From": FROM, "To": TO, "Subject": "s", "TextBody": "t"});
    let req = app
        .client
        .post(format!("{}/email", app.address))
        .header("X-Postmark-Server-Token", &key)
        .json(&pm);
    let r = TestApp::read(req.send().await.unwrap()).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.json["ErrorCode"], 429);
}

/// Idempotency-Key semantics and the daily quota, in Resend's names.
#[tokio::test]
async fn idempotency_and_quota_errors_in_resends_names() {
    let app = TestApp::spawn().await;
    let t = app
        .create_tenant(json!({"name": "Quota", "rate_limit": {"emails_per_day": 2}}))
        .await;
    let key = app.tenant_key(t["id"].as_str().unwrap(), &["send"]).await;
    let body = |s: &str| json!({"from": FROM, "to": TO, "subject": s, "text": "t"});
    let send = |b: Value, idem: Option<String>| {
        let mut req = app
            .client
            .post(format!("{}/emails", app.address))
            .bearer_auth(&key)
            .json(&b);
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        async move { TestApp::read(req.send().await.unwrap()).await }
    };
    let first = send(body("a"), Some("k1".into())).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let again = send(body("a"), Some("k1".into())).await;
    assert_eq!(
        again.json, first.json,
        "the same key and body replay the first answer"
    );
    let other = send(body("b"), Some("k1".into())).await;
    assert_eq!(other.status, 409, "{}", other.text);
    assert_eq!(other.json["name"], "invalid_idempotent_request");
    let r = send(body("c"), Some("x".repeat(256))).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["name"], "invalid_idempotency_key");
    assert_eq!(send(body("d"), None).await.status, 200);
    let over = send(body("e"), None).await;
    assert_eq!(over.status, 429, "{}", over.text);
    assert_eq!(over.json["name"], "daily_quota_exceeded");
    assert!(over.header("retry-after").is_some());
}
