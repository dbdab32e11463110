//! Finding 11: the isolation matrix, generated from the route table
//! (`routes::all()`), not sampled. Every route × {own id, foreign tenant's
//! id, missing id} × {tenant key, admin key, key without the permission,
//! suspended tenant's key}: foreign and missing ids give byte-identical
//! 404s, a missing permission or the wrong kind of key a 403 (Postmark's
//! 401/10, and 422/413 for a suspended tenant, on its routes), the declared
//! permission alone is enough. A new route takes part by being in the table;
//! one whose path parameter or body this file does not know fails here
//! until its fixture is added.

use crate::common;

use std::collections::HashMap;

use common::dns_server::DnsServer;
use common::{Resp, TestApp};
use postline::domain::Permission;
use postline::routes::{self, Access, Endpoint};
use serde_json::{json, Value};

const TENANT_PERMS: [&str; 14] = [
    "send",
    "emails:read",
    "templates:read",
    "templates:write",
    "webhooks:read",
    "webhooks:write",
    "usage:read",
    "domains:read",
    "domains:write",
    "suppressions:read",
    "suppressions:write",
    "audit:read",
    "inbound:read",
    "inbound:write",
];
const ADMIN_ONLY_PERMS: [&str; 3] = ["tenants:read", "tenants:write", "keys:write"];
const MISSING: &str = "00000000-0000-4000-8000-000000000000";
/// A well-formed address on nobody's suppression list (`{id}` of
/// `/v1/suppressions/{id}` is an address, not a uuid).
const MISSING_ADDRESS: &str = "missing@nowhere.example";

/// One tenant's resources.
#[derive(Clone)]
struct Owned {
    tenant: String,
    email: String,
    template: String,
    webhook: String,
    /// A delivery of that webhook (its test ping).
    delivery: String,
    key_id: String,
    /// A verified sending domain: its id, and its name (the `From` of sends).
    domain: String,
    domain_name: String,
    /// An address on the tenant's suppression list.
    suppression: String,
    /// A tenant OAuth client's id.
    oauth_client: String,
    /// An inbound route and a received message (with one attachment).
    inbound_route: String,
    inbound_message: String,
}

struct World {
    a: Owned,
    b: Owned,
    /// Tenant A's key with every tenant permission.
    key_a: String,
    /// A key of a suspended tenant with every tenant permission.
    suspended: String,
    platform_webhook: String,
    platform_delivery: String,
    admin_key_id: String,
    /// A platform OAuth client: its id, `client_id` and secret.
    platform_client: String,
    platform_client_id: String,
    platform_secret: String,
}

fn send_body(w: &World) -> Value {
    let from = format!("a@{}", w.a.domain_name);
    json!({"from": from, "to": "b@example.com", "subject": "s", "text": "t"})
}

async fn owned(app: &TestApp, dns: &DnsServer, name: &str) -> (Owned, String) {
    let t = app.create_tenant(json!({"name": name})).await;
    let tenant = t["id"].as_str().unwrap().to_string();
    let key = app.tenant_key(&tenant, &TENANT_PERMS).await;
    // Once a tenant has a domain it sends only from its own: verified first.
    let d = crate::domains::verified_domain(
        app,
        dns,
        &key,
        json!({"name": format!("d-{tenant}.example")}),
    )
    .await;
    let domain = d["id"].as_str().unwrap().to_string();
    let domain_name = d["name"].as_str().unwrap().to_string();
    let r = app
        .post(
            "/v1/emails",
            &key,
            json!({"from": format!("a@{domain_name}"), "to": "b@example.com", "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let email = r.json["id"].as_str().unwrap().to_string();
    let r = app
        .post(
            "/v1/templates",
            &key,
            json!({"name": "iso", "subject": "s", "text": "t"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let template = r.json["id"].as_str().unwrap().to_string();
    let r = app
        .post(
            "/v1/webhooks",
            &key,
            json!({"url": "http://127.0.0.1:9/h", "events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let webhook = r.json["id"].as_str().unwrap().to_string();
    let delivery = ping(app, &key, &format!("/v1/webhooks/{webhook}/test")).await;
    let extra = app.tenant_key(&tenant, &["send"]).await;
    let keys = app
        .get(&format!("/v1/tenants/{tenant}/api-keys"), &app.admin_key)
        .await;
    let prefix = extra.rsplit_once('_').unwrap().0.to_string();
    let key_id = keys.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == prefix.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .post(
            "/v1/suppressions",
            &key,
            json!({"email": format!("s-{tenant}@example.com"), "reason": "manual"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let suppression = r.json["email"].as_str().unwrap().to_string();
    let r = app
        .post(
            &format!("/v1/tenants/{tenant}/oauth-clients"),
            &app.admin_key,
            json!({"name": "c", "kind": "tenant", "permissions": ["send"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let oauth_client = r.json["id"].as_str().unwrap().to_string();
    let r = app
        .post(
            "/v1/inbound/routes",
            &key,
            json!({"match": format!("*@{domain_name}"), "action": "hold"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let inbound_route = r.json["id"].as_str().unwrap().to_string();
    let inbound_message = received(app, &tenant, &inbound_route);
    (
        Owned {
            tenant,
            email,
            template,
            webhook,
            delivery,
            key_id,
            domain,
            domain_name,
            suppression,
            oauth_client,
            inbound_route,
            inbound_message,
        },
        key,
    )
}

/// A received message with one attachment, stored as the listener stores
/// one (tests/suite/inbound.rs delivers them over SMTP).
fn received(app: &TestApp, tenant: &str, route: &str) -> String {
    use diesel::RunQueryDsl;
    let id = uuid::Uuid::new_v4().to_string();
    let raw = "From: a@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nx\r\n--B--\r\n";
    diesel::sql_query(format!(
        "INSERT INTO inbound_messages (tenant_id, id, route_id, mail_from, recipient, size_bytes, auth, status, raw, content) \
         VALUES ('{tenant}', '{id}', '{route}', 'a@example.org', 'x@example.org', {}, '{{}}', 'held', \
                 convert_to($r${raw}$r$, 'UTF8'), '{{\"attachments\": [{{\"index\": 0, \"content_type\": \"text/plain\", \"size\": 1}}]}}')",
        raw.len()
    ))
    .execute(&mut app.sql_conn())
    .unwrap();
    id
}

/// A webhook's test ping: the id of the delivery it logged.
async fn ping(app: &TestApp, key: &str, path: &str) -> String {
    let r = app.post(path, key, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

async fn world(app: &TestApp, dns: &DnsServer) -> World {
    let (a, key_a) = owned(app, dns, "A").await;
    let (b, _) = owned(app, dns, "B").await;
    let c = app.create_tenant(json!({"name": "C"})).await;
    let c_id = c["id"].as_str().unwrap();
    let suspended = app.tenant_key(c_id, &TENANT_PERMS).await;
    let r = app
        .patch(
            &format!("/v1/tenants/{c_id}"),
            &app.admin_key,
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .post(
            "/v1/admin/webhooks",
            &app.admin_key,
            json!({"url": "http://127.0.0.1:9/p", "events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let platform_webhook = r.json["id"].as_str().unwrap().to_string();
    let platform_delivery = ping(
        app,
        &app.admin_key,
        &format!("/v1/admin/webhooks/{platform_webhook}/test"),
    )
    .await;
    let r = app
        .post(
            "/v1/admin-keys",
            &app.admin_key,
            json!({"name": "other", "permissions": ["usage:read"]}),
        )
        .await;
    assert_eq!(r.status, 201);
    let admin_key_id = r.json["id"].as_str().unwrap().to_string();
    let r = app
        .post(
            "/v1/oauth-clients",
            &app.admin_key,
            json!({"name": "p", "kind": "platform", "permissions": ["usage:read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let s = |f: &str| r.json[f].as_str().unwrap().to_string();
    let (platform_client, platform_client_id, platform_secret) =
        (s("id"), s("client_id"), s("client_secret"));
    World {
        a,
        b,
        key_a,
        suspended,
        platform_webhook,
        platform_delivery,
        admin_key_id,
        platform_client,
        platform_client_id,
        platform_secret,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Own,
    /// Tenant A's scope, tenant B's resource.
    Foreign,
    Missing,
}

/// The resource a path parameter names, by route.
fn resource(w: &World, path: &str, param: &str, who: &Owned, v: Variant) -> String {
    let pick = |own: &str, foreign: &str| match v {
        Variant::Own => own.to_string(),
        Variant::Foreign => foreign.to_string(),
        Variant::Missing => MISSING.to_string(),
    };
    let other = if who.tenant == w.a.tenant { &w.b } else { &w.a };
    match param {
        "email" => pick(&who.email, &other.email),
        "id" if path.starts_with("/v1/admin/webhooks") => pick(&w.platform_webhook, &w.a.webhook),
        "delivery_id" if path.starts_with("/v1/admin/webhooks") => {
            pick(&w.platform_delivery, &w.a.delivery)
        }
        "delivery_id" => pick(&who.delivery, &other.delivery),
        "id" if path.contains("/templates/") => pick(&who.template, &other.template),
        "id" if path.contains("/webhooks/") => pick(&who.webhook, &other.webhook),
        "key" if path.starts_with("/v1/admin-keys") => pick(&w.admin_key_id, &w.a.key_id),
        "key" if path.contains("/api-keys/") => pick(&who.key_id, &other.key_id),
        "id" if path.contains("/domains/") => pick(&who.domain, &other.domain),
        "id" if path.contains("/suppressions/") => match v {
            Variant::Missing => MISSING_ADDRESS.to_string(),
            _ => pick(&who.suppression, &other.suppression),
        },
        // A platform client's route, given a tenant's client: not found.
        "id" if path.starts_with("/v1/oauth-clients") => {
            pick(&w.platform_client, &w.a.oauth_client)
        }
        "id" if path.contains("/oauth-clients/") => pick(&who.oauth_client, &other.oauth_client),
        "id" if path.starts_with("/v1/inbound/routes/") => {
            pick(&who.inbound_route, &other.inbound_route)
        }
        "id" if path.starts_with("/v1/inbound/") => {
            pick(&who.inbound_message, &other.inbound_message)
        }
        "index" if path.starts_with("/v1/inbound/") => "0".to_string(),
        _ => panic!("isolation matrix: no fixture for {{{param}}} in {path}; add one"),
    }
}

/// The concrete path; `{tenant}` is A's own (or missing for `Missing` on a
/// route whose only parameter it is).
fn fill(w: &World, e: &Endpoint, v: Variant) -> Option<String> {
    let params: Vec<&str> = e
        .path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect();
    let has_resource = params.iter().any(|p| *p != "tenant");
    if v == Variant::Foreign && !has_resource && !params.contains(&"tenant") {
        return None;
    }
    let mut path = e.path.to_string();
    for p in &params {
        let value = if *p == "tenant" {
            match v {
                Variant::Missing if !has_resource => MISSING.to_string(),
                // An admin route named by tenant alone (e.g. GET
                // /v1/tenants/{tenant}) has no foreign tenant: admins see all.
                Variant::Foreign if !has_resource => return None,
                _ => w.a.tenant.clone(),
            }
        } else {
            resource(w, e.path, p, &w.a, v)
        };
        path = path.replace(&format!("{{{p}}}"), &value);
    }
    Some(path)
}

/// A valid body for every mutating route (an invalid one would answer 400
/// before the permission check could be seen).
fn body(w: &World, e: &Endpoint, n: usize) -> Option<Value> {
    let m = e.method.as_str();
    let p = e.path;
    let send = send_body(w);
    Some(match (m, p) {
        ("GET" | "HEAD" | "DELETE", _) => return None,
        // The one-click body is a form; the route reads (and ignores) it.
        ("POST", "/u/{token}") => return None,
        ("POST", "/v1/tenants") => json!({"name": format!("N{n}")}),
        ("PUT" | "PATCH", "/v1/tenants/{tenant}") => json!({"name": "Renamed"}),
        ("POST", "/v1/tenants/{tenant}/api-keys") => json!({"name": "k", "permissions": ["send"]}),
        ("POST", "/v1/admin-keys") => json!({"name": "k", "permissions": ["keys:write"]}),
        ("POST", "/v1/emails" | "/v1/tenants/{tenant}/emails") => send,
        ("POST", "/v1/emails/batch") => json!({"emails": [send]}),
        // issue 14: the Resend- and Postmark-compatible routes.
        ("POST", "/emails") => send,
        ("POST", "/emails/batch") => json!([send]),
        ("POST", "/email" | "/email/batch") => {
            let pm = json!({"From": send["from"], "To": "b@example.com", "Subject": "s", "TextBody": "t"});
            if p == "/email" {
                pm
            } else {
                json!([pm])
            }
        }
        ("PATCH", p) if p.ends_with("/emails/{email}") => {
            let at = chrono::Utc::now() + chrono::Duration::hours(1);
            json!({ "scheduled_at": at.to_rfc3339() })
        }
        ("POST", p) if p.ends_with("/emails/{email}/cancel") => json!({}),
        ("POST", p) if p.ends_with("/templates") => {
            json!({"name": format!("t{n}"), "subject": "s", "text": "t"})
        }
        ("PUT" | "PATCH", p) if p.ends_with("/templates/{id}") => json!({"subject": "s2"}),
        ("POST", p) if p.ends_with("/render") => json!({"variables": {}}),
        ("POST", p) if p.ends_with("/webhooks") => {
            json!({"url": "http://127.0.0.1:9/n", "events": ["*"]})
        }
        ("PUT" | "PATCH", p) if p.ends_with("/webhooks/{id}") => json!({"description": "d"}),
        ("POST", p) if p.ends_with("/test") || p.ends_with("/retry") => json!({}),
        ("POST", p) if p.ends_with("/domains") => json!({"name": format!("n{n}.example")}),
        ("POST", p) if p.ends_with("/verify") || p.ends_with("/dkim/rotate") => json!({}),
        ("POST", p) if p.ends_with("/reinstate") => json!({}),
        ("POST", "/v1/inbound/routes") => {
            json!({"match": format!("r{n}@{}", w.a.domain_name), "action": "hold"})
        }
        ("POST", p) if p.ends_with("/suppressions") => {
            json!({"email": format!("p{n}@example.com"), "reason": "manual"})
        }
        ("POST", "/v1/oauth-clients") => {
            json!({"name": "c", "kind": "platform", "permissions": ["keys:write"]})
        }
        ("POST", "/v1/tenants/{tenant}/oauth-clients") => {
            json!({"name": "c", "kind": "tenant", "permissions": ["send"]})
        }
        _ => panic!("isolation matrix: no body for {m} {p}; add one"),
    })
}

/// Keys holding every permission of their kind but `p`, and exactly `p`.
struct Keys {
    /// By (tenant A of the world, admin, permission, only).
    cache: HashMap<(String, bool, Permission, bool), String>,
}

impl Keys {
    async fn get(
        &mut self,
        app: &TestApp,
        w: &World,
        admin: bool,
        p: Permission,
        only: bool,
    ) -> String {
        let slot = (w.a.tenant.clone(), admin, p, only);
        if let Some(k) = self.cache.get(&slot) {
            return k.clone();
        }
        let all: Vec<&str> = if admin {
            TENANT_PERMS
                .iter()
                .chain(ADMIN_ONLY_PERMS.iter())
                .copied()
                .collect()
        } else {
            TENANT_PERMS.to_vec()
        };
        let perms: Vec<&str> = if only {
            vec![p.as_str()]
        } else {
            all.into_iter().filter(|n| *n != p.as_str()).collect()
        };
        let key = if admin {
            let r = app
                .post(
                    "/v1/admin-keys",
                    &app.admin_key,
                    json!({"name": "m", "permissions": perms}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.json["key"].as_str().unwrap().to_string()
        } else {
            app.tenant_key(&w.a.tenant, &perms).await
        };
        self.cache.insert(slot, key.clone());
        key
    }
}

async fn call(
    app: &TestApp,
    w: &World,
    e: &Endpoint,
    path: &str,
    key: Option<&str>,
    n: usize,
) -> Resp {
    app.request(e.method.as_str(), path, key, body(w, e, n))
        .await
}

/// The error's code: problem JSON's `code`, Resend's `name`, or for
/// Postmark's numeric `ErrorCode` the Postline code it stands for.
fn error_code(r: &Resp) -> String {
    if let Some(c) = r.json["code"].as_str().or(r.json["name"].as_str()) {
        return c.to_string();
    }
    match r.json["ErrorCode"].as_u64() {
        Some(413) => "tenant_suspended".into(),
        other => format!("postmark ErrorCode {other:?}"),
    }
}

/// The status of a refused key (wrong kind or lacking the permission) and of
/// a suspended tenant's key: 403 and 403, except on the Postmark-compatible
/// routes, which answer as Postmark does (401/10 and 422/413).
fn refusals(e: &Endpoint) -> (u16, u16) {
    if e.path.starts_with("/email") && !e.path.starts_with("/emails") {
        (401, 422)
    } else {
        (403, 403)
    }
}

fn label(e: &Endpoint) -> String {
    format!("{} {}", e.method, e.path)
}

#[tokio::test]
async fn every_route_isolates_tenants_and_checks_its_permission() {
    // Domains verify against records this server publishes.
    let dns = DnsServer::start().await;
    let ns = dns.nameserver();
    let app = TestApp::spawn_with(|s| {
        s.limits.default_requests_per_minute = 0;
        s.limits.admin_requests_per_minute = 0;
        s.dns.nameservers = vec![ns];
    })
    .await;
    let shared = world(&app, &dns).await;
    let mut keys = Keys {
        cache: HashMap::new(),
    };
    let endpoints = routes::all();
    let mut checked = 0;
    for (n, e) in endpoints.iter().enumerate() {
        let l = label(e);
        // Console pages take a session cookie, not a key: tests/suite/console.rs
        // drives each of them signed out and checks tenant users' isolation.
        if e.access == Access::Console {
            continue;
        }
        let Some(p) = e.access.permission() else {
            // The token endpoint takes client credentials in a form, not a key.
            let r = if e.path == "/oauth/token" {
                let creds = (
                    shared.platform_client_id.as_str(),
                    shared.platform_secret.as_str(),
                );
                crate::oauth::token_request(&app, Some(creds), "grant_type=client_credentials")
                    .await
            } else if e.path == "/u/{token}" {
                // A real token (a forged one is a 404 by design).
                let keys =
                    postline::unsubscribe::UnsubscribeKeys::from_settings(&app.state.settings)
                        .unwrap();
                let token = keys
                    .token(
                        shared.a.tenant.parse().unwrap(),
                        postline::emails::stream::Stream::Broadcast,
                        "x@example.org",
                    )
                    .unwrap();
                call(&app, &shared, e, &format!("/u/{token}"), None, n).await
            } else if e.path.starts_with("/c/") || e.path.starts_with("/o/") {
                // Tracked links answer only what they signed (else 404).
                let path = crate::tracking::signed_path(&app, e.path);
                call(&app, &shared, e, &path, None, n).await
            } else {
                call(&app, &shared, e, e.path, None, n).await
            };
            assert!(r.status < 400, "{l} is public: {}", r.status);
            continue;
        };
        // A route that deletes gets a world of its own.
        let fresh;
        let w = if e.method.as_str() == "DELETE" {
            fresh = world(&app, &dns).await;
            &fresh
        } else {
            &shared
        };
        let own = fill(w, e, Variant::Own).unwrap();
        let tenant_side = matches!(e.access, Access::Tenant(_) | Access::Any(_));
        let admin_side = matches!(e.access, Access::Admin(_) | Access::Any(_));
        let (refused, suspended) = refusals(e);

        // The wrong kind of key, and keys lacking just this permission.
        if !tenant_side {
            let r = call(&app, w, e, &own, Some(&w.key_a), n).await;
            assert_eq!(
                r.status, refused,
                "{l}: a tenant key on an admin route: {}",
                r.text
            );
        }
        if !admin_side {
            let r = call(&app, w, e, &own, Some(&app.admin_key), n).await;
            assert_eq!(
                r.status, refused,
                "{l}: an admin key on a tenant route: {}",
                r.text
            );
        }
        for admin in [false, true] {
            if (admin && !admin_side) || (!admin && !tenant_side) {
                continue;
            }
            if !admin || p != Permission::All {
                let lacking = keys.get(&app, w, admin, p, false).await;
                let r = call(&app, w, e, &own, Some(&lacking), n).await;
                assert_eq!(
                    r.status,
                    refused,
                    "{l}: key without {} (admin {admin}): {}",
                    p.as_str(),
                    r.text
                );
            }
        }
        if tenant_side {
            let r = call(&app, w, e, &own, Some(&w.suspended), n).await;
            assert_eq!(
                r.status, suspended,
                "{l}: suspended tenant's key: {}",
                r.text
            );
            assert_eq!(error_code(&r), "tenant_suspended", "{l}: {}", r.text);
        }

        // Foreign and missing ids: identical 404s, for each caller that may use the route.
        let mut callers: Vec<String> = Vec::new();
        if tenant_side {
            callers.push(keys.get(&app, w, false, p, true).await);
        }
        // Granting a tenant key's permissions needs them held as well (a
        // key never grants more than it has): the full admin key does that.
        // Likewise a tenant OAuth client's (a `keys:write`-only admin key
        // holds no tenant permission to give it).
        let grants = e.method.as_str() == "POST"
            && matches!(
                e.path,
                "/v1/tenants/{tenant}/api-keys" | "/v1/tenants/{tenant}/oauth-clients"
            );
        if grants {
            callers.push(app.admin_key.clone());
        } else if admin_side && !tenant_side {
            callers.push(keys.get(&app, w, true, p, true).await);
        }
        for key in &callers {
            let missing = fill(w, e, Variant::Missing).unwrap();
            if missing != own {
                let m = call(&app, w, e, &missing, Some(key), n).await;
                assert_eq!(m.status, 404, "{l}: missing id {missing}: {}", m.text);
                if let Some(foreign) = fill(w, e, Variant::Foreign).filter(|f| *f != own) {
                    let f = call(&app, w, e, &foreign, Some(key), n).await;
                    assert_eq!(f.status, 404, "{l}: foreign id {foreign}: {}", f.text);
                    assert_eq!(f.text, m.text, "{l}: foreign and missing differ");
                }
            }
        }
        // Last (it may change things): the declared permission alone is enough.
        for key in &callers {
            let r = call(&app, w, e, &own, Some(key), n).await;
            assert!(
                !matches!(r.status, 401 | 403 | 404) && r.status < 500,
                "{l}: own id with only {}: {} {}",
                p.as_str(),
                r.status,
                r.text
            );
        }
        checked += 1;
    }
    assert!(checked >= 55, "the matrix covered {checked} routes");
}
