//! Request bodies fail in API terms on every route that takes one. The
//! routes come from the route table (`routes::all()`) and their body schema
//! from `/openapi.json`, so a new body route is covered without editing
//! this file: wrong types per field, unknown fields and wrong shapes are a
//! 422 naming the field; a missing or wrong Content-Type a 415; a body over
//! the limit a 413 naming it; a key without the permission a 403 before the
//! body is even read.

use crate::common;

use common::{Resp, TestApp};
use serde_json::{json, Map, Value};

const LIMIT: usize = 4096;

/// A body route: method, the path with its placeholders filled, the key
/// that may call it, and the properties of its body schema.
struct BodyRoute {
    method: reqwest::Method,
    pattern: &'static str,
    path: String,
    admin: bool,
    properties: Map<String, Value>,
}

struct Fixture {
    app: TestApp,
    tenant_key: String,
    routes: Vec<BodyRoute>,
}

/// `$ref`s resolved against the spec's components.
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            &spec["components"]["schemas"][name]
        }
        None => schema,
    }
}

async fn fixture() -> Fixture {
    let app = TestApp::spawn_with(|s| s.limits.max_request_bytes = LIMIT).await;
    let tenant = app.create_tenant(json!({"name": "Body errors"})).await;
    let tenant_id = tenant["id"].as_str().unwrap().to_string();
    let all: Vec<&str> = postline::domain::Permission::ALL
        .iter()
        .map(|p| p.as_str())
        .filter(|p| !p.starts_with("tenants:") && *p != "keys:write" && *p != "*")
        .collect();
    let tenant_key = app.tenant_key(&tenant_id, &all).await;
    let spec = app.request("GET", "/openapi.json", None, None).await.json;
    let mut routes = Vec::new();
    for e in postline::routes::all() {
        // The Resend- and Postmark-compatible routes answer in their vendors'
        // error shapes, not problem JSON: tests/suite/compat.rs covers them.
        if e.path.starts_with("/email") {
            continue;
        }
        let method = e.method.as_str().to_ascii_lowercase();
        let op = &spec["paths"][e.path][&method];
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        if schema.is_null() {
            continue;
        }
        let schema = resolve(&spec, schema);
        let properties = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(
            !properties.is_empty(),
            "{} {}: no properties",
            e.method,
            e.path
        );
        let mut path = e.path.replace("{tenant}", &tenant_id);
        while let (Some(a), Some(b)) = (path.find('{'), path.find('}')) {
            path.replace_range(a..=b, "00000000-0000-4000-8000-000000000001");
        }
        routes.push(BodyRoute {
            method: reqwest::Method::from_bytes(e.method.as_str().as_bytes()).unwrap(),
            pattern: e.path,
            admin: matches!(e.access, postline::routes::Access::Admin(_)),
            path,
            properties,
        });
    }
    assert!(
        routes.len() >= 20,
        "only {} body routes found",
        routes.len()
    );
    Fixture {
        app,
        tenant_key,
        routes,
    }
}

impl Fixture {
    async fn send(&self, r: &BodyRoute, key: &str, ctype: Option<&str>, body: Vec<u8>) -> Resp {
        let mut req = self
            .app
            .client
            .request(r.method.clone(), format!("{}{}", self.app.address, r.path))
            .bearer_auth(key)
            .body(body);
        if let Some(c) = ctype {
            req = req.header("content-type", c);
        }
        TestApp::read(req.send().await.unwrap()).await
    }

    fn key(&self, r: &BodyRoute) -> &str {
        if r.admin {
            &self.app.admin_key
        } else {
            &self.tenant_key
        }
    }

    async fn json(&self, r: &BodyRoute, body: &Value) -> Resp {
        let bytes = serde_json::to_vec(body).unwrap();
        self.send(r, self.key(r), Some("application/json"), bytes)
            .await
    }

    /// Rows any of the routes could have written.
    fn rows(&self) -> i64 {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let n: N = diesel::sql_query(
            "SELECT (SELECT count(*) FROM tenants) + (SELECT count(*) FROM api_keys) + (SELECT count(*) FROM admin_keys) \
             + (SELECT count(*) FROM emails) + (SELECT count(*) FROM templates) \
             + (SELECT count(*) FROM webhooks) + (SELECT count(*) FROM platform_webhooks) AS n",
        )
        .get_result(&mut self.app.sql_conn())
        .unwrap();
        n.n
    }
}

/// A value of the wrong JSON type for a property's schema, or `None` when
/// the schema takes any JSON value.
fn wrong_value(spec_schema: &Value) -> Option<Value> {
    let types: Vec<&str> = match &spec_schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let has = |t: &str| types.contains(&t);
    if has("string") || has("array") || has("object") || has("boolean") {
        // A number is none of these.
        if has("object") && spec_schema["properties"].is_null() && !has("string") {
            let free = spec_schema["additionalProperties"].is_null()
                || spec_schema["additionalProperties"] == json!(true);
            if free {
                return None;
            }
        }
        return Some(json!(12345));
    }
    if has("integer") || has("number") {
        return Some(json!("not a number"));
    }
    // oneOf / allOf / $ref: objects, or OneOrMany (a string or a list).
    Some(json!(12345))
}

fn assert_names(resp: &Resp, what: &str, field: &str) {
    assert_eq!(resp.status, 422, "{what}: {}", resp.text);
    assert_eq!(
        resp.json["code"], "validation_failed",
        "{what}: {}",
        resp.text
    );
    let errors = resp.json["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no errors[]: {}", resp.text));
    let first = errors[0]["field"].as_str().unwrap_or_default();
    assert!(
        first == field || (!field.is_empty() && first.starts_with(&format!("{field}["))),
        "{what}: field {first:?}, wanted {field:?}: {}",
        resp.text
    );
    let detail = resp.json["detail"].as_str().unwrap_or_default();
    let message = errors[0]["message"].as_str().unwrap_or_default();
    for rust in [
        "untagged", "sequence", "struct ", "enum ", " map", "u32", "i64", "line 1", "column", "`",
    ] {
        assert!(
            !detail.contains(rust) && !message.contains(rust),
            "{what}: Rust terms ({rust:?}) in {}",
            resp.text
        );
    }
}

#[tokio::test]
async fn every_body_route_names_the_field_of_a_wrong_type_unknown_field_or_wrong_shape() {
    let fx = fixture().await;
    let spec = fx
        .app
        .request("GET", "/openapi.json", None, None)
        .await
        .json;
    let before = fx.rows();
    let mut checked = 0;
    for r in &fx.routes {
        let what = format!("{} {}", r.method, r.pattern);
        // Wrong shape: the body a list, a string, a number.
        for body in [json!([]), json!([{"name": "x"}]), json!("x"), json!(7)] {
            let resp = fx.json(r, &body).await;
            assert_names(&resp, &format!("{what} body {body}"), "");
        }
        // An unknown field.
        let resp = fx.json(r, &json!({"no_such_field": 1})).await;
        assert_names(&resp, &format!("{what} unknown"), "no_such_field");
        // Wrong type for each field.
        for (name, schema) in &r.properties {
            let Some(wrong) = wrong_value(resolve(&spec, schema)) else {
                continue;
            };
            let resp = fx.json(r, &json!({ name: wrong })).await;
            assert_names(&resp, &format!("{what} {name}={wrong}"), name);
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} field samples");
    // The batch route's inner messages are named by index and field.
    let batch = fx
        .routes
        .iter()
        .find(|r| r.pattern == "/v1/emails/batch")
        .expect("batch route");
    let ok = json!({"from": "a@b.test", "to": "c@d.test", "subject": "s", "text": "t"});
    for (body, field) in [
        (
            json!({"emails": [ok, {"from": "a@b.test", "to": ["c@d.test", 5]}]}),
            "emails[1].to",
        ),
        (json!({"emails": [ok, {"from": 5}]}), "emails[1].from"),
        (
            json!({"emails": [ok, {"from": "a@b.test", "bogus": 1}]}),
            "emails[1].bogus",
        ),
        (json!({"emails": {"from": "a@b.test"}}), "emails"),
        (
            json!({"emails": [ok, {"to": "c@d.test"}]}),
            "emails[1].from",
        ),
    ] {
        let resp = fx.json(batch, &body).await;
        assert_names(&resp, &format!("batch {body}"), field);
        for e in resp.json["errors"].as_array().unwrap() {
            let message = e["message"].as_str().unwrap();
            assert!(!message.contains("emails["), "path repeated: {message}");
        }
    }
    let send = fx
        .routes
        .iter()
        .find(|r| r.pattern == "/v1/emails")
        .unwrap();
    let resp = fx.json(send, &json!({"from": "a@b.test", "to": 42})).await;
    assert_names(&resp, "to: 42", "to");
    assert_eq!(
        resp.json["errors"][0]["message"],
        "must be a string or a list of strings, not the number 42"
    );
    assert_eq!(fx.rows(), before, "a refused body changed something");
}

/// Every field error of a body is reported, not only the first; a list sent
/// where the batch's object belongs says which object.
#[tokio::test]
async fn all_field_errors_of_a_body_are_reported() {
    let fx = fixture().await;
    let before = fx.rows();
    let send = fx
        .routes
        .iter()
        .find(|r| r.pattern == "/v1/emails")
        .unwrap();
    let resp = fx
        .json(
            send,
            &json!({"from": 5, "to": "c@d.test", "subject": ["s"], "tags": "x", "bogus": 1}),
        )
        .await;
    // json! writes members in name order: `bogus` is met first.
    assert_names(&resp, "four errors", "bogus");
    let fields: Vec<&str> = resp.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in ["from", "subject", "tags", "bogus"] {
        assert!(fields.contains(&f), "{f} not reported: {}", resp.text);
    }
    assert_eq!(fields.len(), 4, "{}", resp.text);
    let batch = fx
        .routes
        .iter()
        .find(|r| r.pattern == "/v1/emails/batch")
        .unwrap();
    let ok = json!({"from": "a@b.test", "to": "c@d.test", "subject": "s", "text": "t"});
    let resp = fx.json(batch, &json!([ok])).await;
    assert_names(&resp, "batch as a list", "");
    assert!(
        resp.json["detail"]
            .as_str()
            .unwrap()
            .contains(r#"send {"emails": [...]}"#),
        "{}",
        resp.text
    );
    assert_eq!(fx.rows(), before, "a refused body changed something");
}

#[tokio::test]
async fn a_body_without_json_content_type_is_415_on_every_body_route() {
    let fx = fixture().await;
    for r in &fx.routes {
        for ctype in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let resp = fx.send(r, fx.key(r), ctype, b"{}".to_vec()).await;
            assert_eq!(
                resp.status, 415,
                "{} {} {ctype:?}: {}",
                r.method, r.pattern, resp.text
            );
            assert_eq!(resp.json["code"], "unsupported_media_type");
            assert!(resp.json["detail"]
                .as_str()
                .unwrap()
                .contains("application/json"));
        }
        // Parameters and +json types are fine.
        for ctype in [
            "application/json; charset=utf-8",
            "application/merge-patch+json",
        ] {
            let resp = fx.send(r, fx.key(r), Some(ctype), b"[]".to_vec()).await;
            assert_eq!(
                resp.status, 422,
                "{} {} {ctype}: {}",
                r.method, r.pattern, resp.text
            );
        }
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_naming_the_limit_on_every_body_route() {
    let fx = fixture().await;
    let big = format!(r#"{{"name": "{}"}}"#, "a".repeat(LIMIT));
    for r in &fx.routes {
        let resp = fx
            .send(
                r,
                fx.key(r),
                Some("application/json"),
                big.clone().into_bytes(),
            )
            .await;
        assert_eq!(
            resp.status, 413,
            "{} {}: {}",
            r.method, r.pattern, resp.text
        );
        assert_eq!(resp.json["code"], "payload_too_large");
        let detail = resp.json["detail"].as_str().unwrap();
        assert!(detail.contains("4096 bytes (4 KiB)"), "{detail}");
    }
    // At the limit exactly the body is read (and then refused for its shape).
    let tenants = fx
        .routes
        .iter()
        .find(|r| r.pattern == "/v1/tenants")
        .unwrap();
    let pad = LIMIT - r#"{"name": ""}"#.len();
    let at = format!(r#"{{"name": "{}"}}"#, "a".repeat(pad));
    assert_eq!(at.len(), LIMIT);
    let resp = fx
        .send(
            tenants,
            &fx.app.admin_key,
            Some("application/json"),
            at.into_bytes(),
        )
        .await;
    assert_ne!(resp.status, 413, "{}", resp.text);
    // Without a Content-Length (chunked), the limit holds while reading.
    let resp = chunked_post(&fx.app, "/v1/tenants", &"a".repeat(LIMIT + 10)).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("4096 bytes"), "{resp}");
}

/// A raw HTTP/1.1 request with a chunked body (reqwest always sends a length
/// for a buffered body).
async fn chunked_post(app: &TestApp, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.admin_key
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.as_bytes().chunks(1000) {
        let frame = format!("{:x}\r\n", chunk.len());
        // The server may answer and close before the last chunk.
        if s.write_all(frame.as_bytes()).await.is_err()
            || s.write_all(chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_permission_is_checked_before_the_body_on_every_body_route() {
    let fx = fixture().await;
    let tenant = fx.app.create_tenant(json!({"name": "No perms"})).await;
    let weak_tenant = fx
        .app
        .tenant_key(tenant["id"].as_str().unwrap(), &["emails:read"])
        .await;
    let r = fx
        .app
        .post(
            "/v1/admin-keys",
            &fx.app.admin_key,
            json!({"name": "reader", "permissions": ["emails:read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let weak_admin = r.json["key"].as_str().unwrap().to_string();
    for r in &fx.routes {
        let key = if r.admin { &weak_admin } else { &weak_tenant };
        for (ctype, body) in [
            (Some("application/json"), b"{\"from\": ".to_vec()),
            (Some("application/json"), b"[]".to_vec()),
            (None, b"{}".to_vec()),
            (Some("application/json"), vec![b'x'; LIMIT * 2]),
        ] {
            let resp = fx.send(r, key, ctype, body).await;
            assert_eq!(
                resp.status, 403,
                "{} {}: {}",
                r.method, r.pattern, resp.text
            );
        }
    }
}
