//! Drill 4 (DESIGN §10, issue 7): malformed input. A property run (proptest)
//! sends generated requests through real HTTP to the real app and checks,
//! for every one of them:
//!
//! - never a 5xx (the app is healthy, so not even a 503);
//! - every 4xx is problem JSON (`application/problem+json`, `status` equal
//!   to the HTTP status, a `code`);
//! - nothing is stored for a rejected request: the `emails`, `tenants`,
//!   `api_keys`, `templates` and `webhooks` row counts do not move unless the
//!   answer is 2xx.
//!
//! Generated: arbitrary JSON values, valid bodies with fields removed,
//! replaced by arbitrary JSON or hostile strings (CR/LF/NUL, control and
//! bidi characters, huge strings) and unknown fields added, for
//! `POST /v1/emails` (tenant key and platform style), `/v1/emails/batch`,
//! `POST /v1/tenants`, `PATCH /v1/tenants/{id}`,
//! `POST /v1/tenants/{id}/api-keys`, templates (create, update, render, with
//! hostile template sources) and webhooks (create, update; every URL that
//! could be one is rewritten to 127.0.0.1: nothing else is ever a target,
//! and no worker runs, so no webhook is ever sent); raw bytes as bodies;
//! arbitrary methods, paths, query strings, `Authorization` values and
//! headers.
//!
//! Short version in the suite (~2,000 requests); `POSTLINE_DRILL_LONG=1`:
//! ten times as many cases. Failures shrink to a minimal request.

use crate::common;
use crate::drills;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use common::TestApp;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

/// Field names the API knows, so generated objects often hit real fields.
const FIELDS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "subject",
    "text",
    "html",
    "headers",
    "attachments",
    "tags",
    "template",
    "variables",
    "tenant_id",
    "emails",
    "name",
    "external_id",
    "domain",
    "settings",
    "smtp",
    "rate_limit",
    "status",
    "permissions",
    "expires_at",
    "from_name",
    "host",
    "port",
    "username",
    "password",
    "tls",
    "requests_per_minute",
    "emails_per_day",
    "emails_per_second",
    "filename",
    "content",
    "content_type",
];

fn hostile_string() -> BoxedStrategy<String> {
    prop_oneof![
        8 => any::<String>(),
        6 => "[a-z0-9@.<> _-]{0,24}",
        3 => "[\\x00-\\x1f\\x7f]{1,4}",
        1 => Just(String::new()),
        1 => Just("a@example.org".to_string()),
        1 => Just("Name <a@example.org>".to_string()),
        1 => Just("a@example.org\r\nBcc: victim@example.org".to_string()),
        1 => Just("Subject\nX-Injected: 1".to_string()),
        1 => Just("nul\u{0}byte".to_string()),
        1 => Just("\u{202e}\u{feff}\u{fffd}😀".to_string()),
        1 => Just("@".to_string()),
        1 => Just("a@-bad-.com".to_string()),
        1 => Just("2026-13-45T99:99:99Z".to_string()),
        1 => Just("*".to_string()),
        1 => Just("send".to_string()),
        1 => Just("suspended".to_string()),
        1 => Just("bm90IGJhc2U2NA===".to_string()),
        // Over the test app's 64 KiB body limit once serialised.
        1 => Just("x".repeat(70_000)),
    ]
    .boxed()
}

fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(65536)),
        Just(json!(2147483648i64)),
        Just(json!(1e308)),
    ]
    .boxed()
}

fn key_name() -> BoxedStrategy<String> {
    prop_oneof![
        3 => proptest::sample::select(FIELDS).prop_map(str::to_string),
        1 => hostile_string(),
    ]
    .boxed()
}

/// Any JSON value, nested a few levels.
fn arb_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key_name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
    .boxed()
}

#[derive(Clone, Debug)]
enum Edit {
    Remove(String),
    Set(String, Value),
}

fn edits() -> BoxedStrategy<Vec<Edit>> {
    vec(
        prop_oneof![
            1 => key_name().prop_map(Edit::Remove),
            3 => (key_name(), arb_json()).prop_map(|(k, v)| Edit::Set(k, v)),
        ],
        1..4,
    )
    .boxed()
}

/// A valid body with a few edits: removed fields, fields replaced by
/// arbitrary JSON, unknown fields added.
fn mutated(base: Value) -> BoxedStrategy<Value> {
    edits()
        .prop_map(move |edits| {
            let mut v = base.clone();
            let obj = v.as_object_mut().expect("base is an object");
            for e in edits {
                match e {
                    Edit::Remove(k) => {
                        obj.remove(&k);
                    }
                    Edit::Set(k, val) => {
                        obj.insert(k, val);
                    }
                }
            }
            v
        })
        .boxed()
}

/// Platform style: an admin key names the tenant in the body.
fn admin_send_body(tenant_id: &str) -> Value {
    let mut b = send_body();
    b["tenant_id"] = json!(tenant_id);
    b
}

fn send_body() -> Value {
    json!({"from": "app@sender.test", "to": ["a@example.org"], "subject": "Hi", "text": "Hello",
           "tags": {"k": "v"}, "headers": {"X-Campaign": "c1"},
           "attachments": [{"filename": "a.txt", "content": "aGVsbG8=", "content_type": "text/plain"}]})
}

/// Send bodies: fully arbitrary, or mutated valid ones.
fn send_json() -> BoxedStrategy<Value> {
    prop_oneof![1 => arb_json(), 4 => mutated(send_body())].boxed()
}

fn batch_json() -> BoxedStrategy<Value> {
    prop_oneof![
        1 => arb_json(),
        3 => vec(prop_oneof![Just(send_body()), send_json()], 0..4)
            .prop_map(|emails| json!({"emails": emails})),
        1 => mutated(json!({"emails": [send_body()]})),
    ]
    .boxed()
}

fn tenant_json() -> BoxedStrategy<Value> {
    let base = json!({"name": "Fuzz", "external_id": "ext-1", "domain": "fuzz.example",
        "settings": {"from_name": "Fuzz", "reply_to": "r@fuzz.example"},
        "smtp": {"host": "smtp.fuzz.example", "port": 587, "username": "u", "password": "p", "tls": "starttls"},
        "rate_limit": {"requests_per_minute": 100, "emails_per_day": 1000, "emails_per_second": 5}});
    prop_oneof![1 => arb_json(), 4 => mutated(base)].boxed()
}

fn key_json() -> BoxedStrategy<Value> {
    let base = json!({"name": "k", "permissions": ["send", "emails:read"], "expires_at": "2099-01-01T00:00:00Z"});
    prop_oneof![1 => arb_json(), 3 => mutated(base)].boxed()
}

fn template_body() -> Value {
    json!({"name": "base", "subject": "Hi {{ name }}", "text": "Hello {{ name }}",
           "html": "<p>Hello {{ name }}</p>"})
}

/// Template sources that stress the engine: syntax errors, unknown
/// filters, attribute walks, loops that must run out of fuel.
fn template_source() -> BoxedStrategy<Value> {
    prop_oneof![
        Just("{{".to_string()),
        Just("{% for x in y %}".to_string()),
        Just("{{ name | no_such_filter }}".to_string()),
        Just("{{ ''.__class__ }}".to_string()),
        Just("{% for i in range(100000000) %}x{% endfor %}".to_string()),
        Just("{{ name * 99999999 }}".to_string()),
        Just("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}".to_string()),
        Just("{% include 'x' %}{% extends 'y' %}".to_string()),
        Just("{{ missing.deep.path }}".to_string()),
        "[{}%# a-z|]{0,30}",
    ]
    .prop_map(Value::String)
    .boxed()
}

fn template_json() -> BoxedStrategy<Value> {
    let sourced = (
        mutated(template_body()),
        proptest::sample::select(&["subject", "text", "html"][..]),
        template_source(),
    )
        .prop_map(|(mut b, field, src)| {
            if let Some(o) = b.as_object_mut() {
                o.insert(field.to_string(), src);
            }
            b
        });
    prop_oneof![1 => arb_json(), 2 => mutated(template_body()), 2 => sourced].boxed()
}

fn webhook_body() -> Value {
    json!({"url": "http://127.0.0.1:9/hook", "events": ["email.delivered"], "description": "d"})
}

fn webhook_json() -> BoxedStrategy<Value> {
    prop_oneof![1 => arb_json(), 3 => mutated(webhook_body())].boxed()
}

/// Nothing but 127.0.0.1 may ever be a target: a generated `url` that looks
/// like a URL at all is pointed back at the loopback discard port.
fn local_urls(mut body: Value) -> Value {
    if let Some(o) = body.as_object_mut() {
        if let Some(Value::String(u)) = o.get("url") {
            if u.to_ascii_lowercase().contains("://") || u.contains('.') {
                o.insert("url".into(), json!("http://127.0.0.1:9/hook"));
            }
        }
    }
    body
}

/// Who is calling.
#[derive(Clone, Debug)]
enum Auth {
    None,
    Admin,
    Tenant,
    /// A raw `Authorization` value (bytes a header may carry).
    Raw(Vec<u8>),
}

fn garbage_auth() -> BoxedStrategy<Auth> {
    let header_bytes = vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..80);
    prop_oneof![
        Just(Auth::None),
        header_bytes.prop_map(Auth::Raw),
        "[ -~]{0,60}".prop_map(|s| Auth::Raw(format!("Bearer {s}").into_bytes())),
        "[a-z0-9_]{0,12}".prop_map(|s| Auth::Raw(format!("Bearer pl_live_{s}_{s}").into_bytes())),
        Just(Auth::Raw(b"Basic dXNlcjpwYXNz".to_vec())),
        Just(Auth::Raw(b"Bearer".to_vec())),
        Just(Auth::Raw(b"Bearer ".to_vec())),
    ]
    .boxed()
}

#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    auth: Auth,
    content_type: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
}

fn json_req(method: &str, path: String, auth: Auth, body: Value) -> Req {
    Req {
        method: method.into(),
        path,
        auth,
        content_type: Some(b"application/json".to_vec()),
        headers: Vec::new(),
        body: Some(serde_json::to_vec(&body).unwrap()),
    }
}

/// Valid JSON text cut short or with bytes flipped, or plain random bytes.
fn broken_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..256),
        (send_json(), any::<prop::sample::Index>()).prop_map(|(v, i)| {
            let b = serde_json::to_vec(&v).unwrap();
            b[..i.index(b.len() + 1)].to_vec()
        }),
        (send_json(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, i, x)| {
            let mut b = serde_json::to_vec(&v).unwrap();
            if !b.is_empty() {
                let at = i.index(b.len());
                b[at] = x;
            }
            b
        }),
    ]
    .boxed()
}

fn segment(victim: String) -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[A-Za-z0-9._~-]{0,24}",
        2 => vec(any::<u8>(), 0..16).prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect()),
        1 => Just(victim),
        1 => Just(uuid::Uuid::new_v4().to_string()),
        1 => Just("..".to_string()),
        1 => Just("%2e%2e".to_string()),
        1 => Just("%00".to_string()),
        1 => Just("x".repeat(3000)),
    ]
    .boxed()
}

const TEMPLATES: &[&str] = &[
    "/v1/emails",
    "/v1/emails/batch",
    "/v1/emails/{}",
    "/v1/tenants",
    "/v1/tenants/{}",
    "/v1/tenants/{}/api-keys",
    "/v1/tenants/{}/api-keys/{}",
    "/v1/tenants/{}/emails",
    "/v1/tenants/{}/emails/{}",
    "/v1/tenants/{}/usage",
    "/v1/usage",
    "/v1/admin-keys",
    "/v1/admin-keys/{}",
    "/v1/templates",
    "/v1/templates/{}",
    "/v1/templates/{}/render",
    "/v1/tenants/{}/templates",
    "/v1/webhooks",
    "/v1/webhooks/{}",
    "/v1/webhooks/{}/deliveries",
    "/v1/admin/webhooks",
    "/v1/admin/webhooks/{}",
    "/openapi.json",
    "/healthz",
    "/readyz",
    "/{}",
    "/{}/{}/{}",
];

fn query() -> BoxedStrategy<String> {
    let pair = (
        prop_oneof![
            proptest::sample::select(
                &[
                    "limit",
                    "cursor",
                    "status",
                    "tag",
                    "tenant_id",
                    "period",
                    "from",
                    "to"
                ][..]
            )
            .prop_map(str::to_string),
            "[a-z%0-9]{0,8}",
        ],
        prop_oneof![
            "[A-Za-z0-9%+=._-]{0,20}",
            Just("-1".to_string()),
            Just("99999999999999999999".to_string()),
            Just("2026-13".to_string()),
            Just("%ZZ".to_string()),
            Just("%00".to_string()),
            Just("a%0D%0Ab".to_string()),
        ],
    );
    prop_oneof![
        2 => Just(String::new()),
        3 => vec(pair, 1..4).prop_map(|ps| {
            let q: Vec<String> = ps.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("?{}", q.join("&"))
        }),
    ]
    .boxed()
}

fn any_request(victim: String) -> BoxedStrategy<Req> {
    let method = prop_oneof![
        4 => proptest::sample::select(&["GET", "GET", "GET", "POST", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"][..])
            .prop_map(str::to_string),
        1 => "[A-Z]{1,10}",
    ];
    let path = (
        proptest::sample::select(TEMPLATES),
        vec(segment(victim), 3),
        query(),
    )
        .prop_map(|(t, segs, q)| {
            let mut p = t.to_string();
            for s in segs {
                p = p.replacen("{}", &s, 1);
            }
            p + &q
        });
    let auth = prop_oneof![
        2 => Just(Auth::Admin),
        2 => Just(Auth::Tenant),
        3 => garbage_auth(),
    ];
    let ctype = prop_oneof![
        Just(None),
        Just(Some(b"application/json".to_vec())),
        Just(Some(b"application/json; charset=latin1".to_vec())),
        Just(Some(b"text/plain".to_vec())),
        "[ -~]{0,30}".prop_map(|s| Some(s.into_bytes())),
    ];
    let headers = vec(
        (
            proptest::sample::select(
                &[
                    "Idempotency-Key",
                    "Accept",
                    "Accept-Encoding",
                    "X-Request-Id",
                    "Content-Encoding",
                    "Origin",
                ][..],
            )
            .prop_map(str::to_string),
            vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff], 0..300),
        ),
        0..3,
    );
    let body = prop_oneof![
        Just(None),
        arb_json().prop_map(|v| Some(serde_json::to_vec(&local_urls(v)).unwrap())),
        broken_bytes().prop_map(Some),
    ];
    (method, path, auth, ctype, headers, body)
        .prop_map(|(method, path, auth, content_type, headers, body)| Req {
            method,
            path,
            auth,
            content_type,
            headers,
            body,
        })
        .boxed()
}

#[derive(QueryableByName, PartialEq, Eq, Debug, Clone, Copy)]
struct Counts {
    #[diesel(sql_type = BigInt)]
    emails: i64,
    #[diesel(sql_type = BigInt)]
    tenants: i64,
    #[diesel(sql_type = BigInt)]
    keys: i64,
    #[diesel(sql_type = BigInt)]
    templates: i64,
    #[diesel(sql_type = BigInt)]
    webhooks: i64,
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    app: TestApp,
    tenant_key: String,
    conn: Mutex<PgConnection>,
    /// `(group, status) → count`, for the report.
    seen: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Fixture {
    fn counts(&self) -> Counts {
        diesel::sql_query(
            "SELECT (SELECT count(*) FROM emails) AS emails, \
                    (SELECT count(*) FROM tenants) AS tenants, \
                    (SELECT count(*) FROM api_keys) + (SELECT count(*) FROM admin_keys) AS keys, \
                    (SELECT count(*) FROM templates) AS templates, \
                    (SELECT count(*) FROM webhooks) \
                      + (SELECT count(*) FROM platform_webhooks) AS webhooks",
        )
        .get_result(&mut *self.conn.lock().unwrap())
        .expect("row counts")
    }

    /// Sends one request and checks the properties.
    fn check(&self, group: &str, req: &Req) -> Result<(), TestCaseError> {
        let Ok(method) = reqwest::Method::from_bytes(req.method.as_bytes()) else {
            return Ok(());
        };
        let mut b = self
            .app
            .client
            .request(method.clone(), format!("{}{}", self.app.address, req.path));
        let auth: Option<Vec<u8>> = match &req.auth {
            Auth::None => None,
            Auth::Admin => Some(format!("Bearer {}", self.app.admin_key).into_bytes()),
            Auth::Tenant => Some(format!("Bearer {}", self.tenant_key).into_bytes()),
            Auth::Raw(v) => Some(v.clone()),
        };
        let mut headers = req.headers.clone();
        if let Some(a) = auth {
            headers.push(("Authorization".into(), a));
        }
        if let Some(c) = &req.content_type {
            headers.push(("Content-Type".into(), c.clone()));
        }
        for (k, v) in headers {
            let Ok(v) = reqwest::header::HeaderValue::from_bytes(&v) else {
                return Ok(()); // not a value HTTP can carry: nothing to send
            };
            b = b.header(k, v);
        }
        if let Some(body) = &req.body {
            b = b.body(body.clone());
        }
        let Ok(request) = b.build() else {
            return Ok(()); // e.g. a path reqwest will not put on the wire
        };
        let before = self.counts();
        let resp = self.rt.block_on(async {
            let r = self.app.client.execute(request).await?;
            Ok::<_, reqwest::Error>(TestApp::read(r).await)
        });
        let resp = resp.map_err(|e| TestCaseError::fail(format!("no HTTP answer: {e}")))?;
        let after = self.counts();
        *self
            .seen
            .lock()
            .unwrap()
            .entry((group.to_string(), resp.status))
            .or_default() += 1;
        prop_assert!(
            resp.status < 500,
            "{} {} → {}: {}",
            req.method,
            req.path,
            resp.status,
            resp.text
        );
        if resp.status >= 400 && method != reqwest::Method::HEAD {
            let ctype = resp.header("content-type").unwrap_or_default();
            prop_assert!(
                ctype.starts_with("application/problem+json"),
                "{} is not problem JSON ({ctype}): {}",
                resp.status,
                resp.text
            );
            prop_assert_eq!(resp.json["status"].as_u64(), Some(u64::from(resp.status)));
            prop_assert!(resp.json["code"].is_string(), "no code: {}", resp.text);
        }
        if !(200..300).contains(&resp.status) {
            prop_assert_eq!(
                before,
                after,
                "a {} ({}) stored something",
                resp.status,
                resp.text
            );
        }
        Ok(())
    }
}

fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 300,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

#[test]
fn malformed_input_never_gets_a_5xx_and_stores_nothing() {
    let scale = if drills::long() { 10 } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(TestApp::spawn_with(|s| {
        s.limits.max_request_bytes = 64 * 1024;
    }));
    let (tenant_key, sender, victim, template, webhook) = rt.block_on(async {
        let t = app.create_tenant(json!({"name": "Sender"})).await;
        let sender = t["id"].as_str().unwrap().to_string();
        let key = app
            .tenant_key(
                &sender,
                &[
                    "send",
                    "emails:read",
                    "templates:read",
                    "templates:write",
                    "webhooks:read",
                    "webhooks:write",
                ],
            )
            .await;
        let v = app.create_tenant(json!({"name": "Victim"})).await;
        let tpl = app.post("/v1/templates", &key, template_body()).await;
        assert_eq!(tpl.status, 201, "{}", tpl.text);
        let hook = app.post("/v1/webhooks", &key, webhook_body()).await;
        assert_eq!(hook.status, 201, "{}", hook.text);
        (
            key,
            sender,
            v["id"].as_str().unwrap().to_string(),
            tpl.json["id"].as_str().unwrap().to_string(),
            hook.json["id"].as_str().unwrap().to_string(),
        )
    });
    let conn = Mutex::new(app.sql_conn());
    let fx = Fixture {
        rt,
        app,
        tenant_key,
        conn,
        seen: Mutex::default(),
    };
    let started = Instant::now();
    let n = 200 * scale;

    run(n, send_json(), |b| {
        fx.check(
            "send",
            &json_req("POST", "/v1/emails".into(), Auth::Tenant, b),
        )
    });
    let platform = prop_oneof![1 => arb_json(), 4 => mutated(admin_send_body(&sender))];
    run(n / 2, platform, |b| {
        fx.check(
            "send (admin)",
            &json_req("POST", "/v1/emails".into(), Auth::Admin, b),
        )
    });
    run(n, batch_json(), |b| {
        fx.check(
            "batch",
            &json_req("POST", "/v1/emails/batch".into(), Auth::Tenant, b),
        )
    });
    run(n, tenant_json(), |b| {
        fx.check(
            "create tenant",
            &json_req("POST", "/v1/tenants".into(), Auth::Admin, b),
        )
    });
    // A fresh name unless the edits chose one, so creations can succeed.
    let create_tpl = (template_json(), "[a-z]{12}").prop_map(|(mut b, name)| {
        if b.get("name") == Some(&json!("base")) {
            b["name"] = json!(name);
        }
        b
    });
    run(n, create_tpl, |b| {
        fx.check(
            "create template",
            &json_req("POST", "/v1/templates".into(), Auth::Tenant, b),
        )
    });
    let tpl_path = format!("/v1/templates/{template}");
    run(n, template_json(), |b| {
        fx.check(
            "update template",
            &json_req("PUT", tpl_path.clone(), Auth::Tenant, b),
        )
    });
    let render = format!("/v1/templates/{template}/render");
    let vars = prop_oneof![1 => arb_json(), 3 => mutated(json!({"variables": {"name": "Ann"}}))];
    run(n / 2, vars, |b| {
        fx.check("render", &json_req("POST", render.clone(), Auth::Tenant, b))
    });
    run(n, webhook_json(), |b| {
        fx.check(
            "create webhook",
            &json_req("POST", "/v1/webhooks".into(), Auth::Tenant, local_urls(b)),
        )
    });
    let hook_path = format!("/v1/webhooks/{webhook}");
    run(n / 2, webhook_json(), |b| {
        fx.check(
            "update webhook",
            &json_req("PUT", hook_path.clone(), Auth::Tenant, local_urls(b)),
        )
    });
    let patch = format!("/v1/tenants/{victim}");
    run(n, tenant_json(), |b| {
        fx.check(
            "patch tenant",
            &json_req("PATCH", patch.clone(), Auth::Admin, b),
        )
    });
    let keys = format!("/v1/tenants/{victim}/api-keys");
    run(n, key_json(), |b| {
        fx.check(
            "create key",
            &json_req("POST", keys.clone(), Auth::Admin, b),
        )
    });
    run(n, broken_bytes(), |bytes| {
        let mut r = json_req("POST", "/v1/emails".into(), Auth::Tenant, Value::Null);
        r.body = Some(bytes);
        fx.check("raw bytes", &r)
    });
    // A deterministic sweep: every read route, with real ids, each query
    // parameter set to a NUL or a CRLF (free text reaching SQL), and each id
    // replaced by one.
    let reads = [
        "/v1/emails".to_string(),
        format!("/v1/tenants/{sender}/emails"),
        "/v1/tenants".to_string(),
        format!("/v1/tenants/{sender}"),
        format!("/v1/tenants/{sender}/api-keys"),
        format!("/v1/tenants/{sender}/usage"),
        "/v1/usage".to_string(),
        "/v1/admin-keys".to_string(),
        "/v1/templates".to_string(),
        format!("/v1/templates/{template}"),
        format!("/v1/tenants/{sender}/templates"),
        "/v1/webhooks".to_string(),
        format!("/v1/webhooks/{webhook}"),
        format!("/v1/webhooks/{webhook}/deliveries"),
        format!("/v1/tenants/{sender}/webhooks"),
        "/v1/admin/webhooks".to_string(),
    ];
    let params = [
        "limit",
        "cursor",
        "status",
        "tag",
        "tenant_id",
        "period",
        "from",
        "to",
        "event",
        "type",
        "enabled",
    ];
    for path in &reads {
        let mut requests = Vec::new();
        for v in ["%00", "a%00b", "%0D%0A"] {
            for p in params {
                requests.push(("GET", format!("{path}?{p}={v}")));
            }
            for id in [&sender, &template, &webhook] {
                if path.contains(id.as_str()) {
                    // Writes too: the id is not a real one any more.
                    for m in ["GET", "PUT", "PATCH", "POST", "DELETE"] {
                        requests.push((m, path.replace(id.as_str(), v)));
                    }
                }
            }
        }
        for (method, p) in requests {
            for auth in [Auth::Admin, Auth::Tenant] {
                let mut r = json_req(method, p.clone(), auth, json!({}));
                if method == "GET" {
                    r.body = None;
                    r.content_type = None;
                }
                if let Err(e) = fx.check("nul sweep", &r) {
                    panic!("{e}");
                }
            }
        }
    }

    // Last: it may delete or suspend the victim tenant.
    run(n * 2, any_request(victim.clone()), |r| {
        fx.check("any request", &r)
    });

    let seen = fx.seen.lock().unwrap().clone();
    let mut groups: BTreeMap<String, BTreeMap<u16, u64>> = BTreeMap::new();
    for ((g, s), c) in &seen {
        groups.entry(g.clone()).or_default().insert(*s, *c);
    }
    let total: u64 = seen.values().sum();
    report!(
        "input drill ({}): {total} requests in {:.1} s, no 5xx, every 4xx problem JSON, nothing stored on a refusal",
        if scale > 1 { "long" } else { "short" },
        started.elapsed().as_secs_f64()
    );
    for (g, statuses) in groups {
        report!("input drill, {g:>13}: {statuses:?}");
    }
}
