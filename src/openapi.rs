//! The OpenAPI 3.1 document, generated from the handlers' annotations
//! (utoipa), served at `/openapi.json`, and a readable reference page at
//! `/docs` rendered here from the same document — no JavaScript, nothing
//! fetched from elsewhere, so it works on an offline network too.

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{Access, Endpoint};
use crate::{
    audit, compat, domains, emails, http, keys, oauth, reputation, suppressions, templates,
    tenants, unsubscribe, usage, webhooks,
};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("pl_<admin|live>_<key_id>_<secret> or JWT")
                    .description(Some("An admin key (`pl_admin_…`), a tenant key (`pl_live_…`), or an OAuth access token from `POST /oauth/token` (a platform client's acts as an admin key, a tenant client's as a tenant key); the scopes listed per operation are the permissions it needs."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("OAuth client authentication at `POST /oauth/token`: `client_id` and `client_secret` (or send both as form fields instead)."))
                    .build(),
            ),
        );
    }
}

/// Templates and webhooks are annotated once, in their tenant-key form
/// (`/v1/templates…`, `/v1/webhooks…`); the same handlers also serve the
/// admin forms. This adds those paths (with the `{tenant}` parameter, or
/// platform-wide) and PATCH beside every PUT, so the document lists every
/// route the server registers.
struct ScopedForms;

impl Modify for ScopedForms {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        let tenant_param = ParameterBuilder::new()
            .name("tenant")
            .parameter_in(ParameterIn::Path)
            .required(utoipa::openapi::Required::True)
            .description(Some("Tenant id or external_id (admin keys)"))
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String),
            ))
            .build();
        let forms: [(&str, &str, bool, &str); 5] = [
            (
                "/v1/domains",
                "/v1/tenants/{tenant}/domains",
                true,
                "Admin key acting for the tenant in the path.",
            ),
            (
                "/v1/suppressions",
                "/v1/tenants/{tenant}/suppressions",
                true,
                "Admin key acting for the tenant in the path.",
            ),
            (
                "/v1/templates",
                "/v1/tenants/{tenant}/templates",
                true,
                "Admin key acting for the tenant in the path.",
            ),
            (
                "/v1/webhooks",
                "/v1/tenants/{tenant}/webhooks",
                true,
                "Admin key acting for the tenant in the path.",
            ),
            (
                "/v1/webhooks",
                "/v1/admin/webhooks",
                false,
                "Platform-wide endpoint receiving every tenant's events (admin key).",
            ),
        ];
        let originals: Vec<(String, utoipa::openapi::path::PathItem)> = api
            .paths
            .paths
            .iter()
            .map(|(p, item)| (p.clone(), item.clone()))
            .collect();
        for (path, item) in &originals {
            if item.put.is_some()
                && item.patch.is_none()
                && (path.starts_with("/v1/templates") || path.starts_with("/v1/webhooks"))
            {
                if let Some(i) = api.paths.paths.get_mut(path) {
                    i.patch = i.put.clone();
                }
            }
        }
        for (from, to, with_tenant, note) in forms {
            for (path, _) in &originals {
                let Some(rest) = path.strip_prefix(from) else {
                    continue;
                };
                let Some(mut item) = api.paths.paths.get(path).cloned() else {
                    continue;
                };
                for op in [
                    &mut item.get,
                    &mut item.post,
                    &mut item.put,
                    &mut item.patch,
                    &mut item.delete,
                ]
                .into_iter()
                .flatten()
                {
                    op.description = Some(format!(
                        "{} {note}",
                        op.description.clone().unwrap_or_default()
                    ));
                    op.operation_id = op.operation_id.as_ref().map(|id| {
                        format!(
                            "{id}_{}",
                            if with_tenant {
                                "for_tenant"
                            } else {
                                "platform"
                            }
                        )
                    });
                    if with_tenant {
                        op.parameters
                            .get_or_insert_with(Vec::new)
                            .insert(0, tenant_param.clone());
                    }
                }
                api.paths.paths.insert(format!("{to}{rest}"), item);
            }
        }
    }
}

/// Error responses are RFC 9457 problem JSON, served as
/// `application/problem+json` (`error::problem_response`); utoipa documents
/// every `body = Problem` as `application/json`. This moves each response
/// whose schema is `Problem` to the media type the server sends, so a
/// generated client (and schemathesis' `content_type_conformance`) sees what
/// arrives. Other JSON error bodies (OAuth's RFC 6749 errors) stay as they are.
struct ProblemMediaType;

pub const PROBLEM_JSON: &str = "application/problem+json";

impl Modify for ProblemMediaType {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        let is_problem = |c: &utoipa::openapi::Content| matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location == "#/components/schemas/Problem");
        for item in api.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for resp in op.responses.responses.values_mut() {
                    let RefOr::T(resp) = resp else { continue };
                    if resp.content.get("application/json").is_some_and(is_problem) {
                        if let Some(c) = resp.content.shift_remove("application/json") {
                            resp.content.insert(PROBLEM_JSON.to_string(), c);
                        }
                    }
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Postline API", version = "1", description = "Self-hosted, multi-tenant transactional email. Errors are RFC 9457 problem JSON; lists are cursor-paginated, newest first."),
    paths(
        http::healthz, http::readyz, http::metrics,
        crate::tracking::routes::click, crate::tracking::routes::open,
        tenants::routes::create, tenants::routes::list, tenants::routes::get,
        tenants::routes::put, tenants::routes::patch, tenants::routes::delete,
        keys::routes::create_tenant_key, keys::routes::list_tenant_keys, keys::routes::revoke_tenant_key,
        keys::routes::create_admin_key, keys::routes::list_admin_keys, keys::routes::revoke_admin_key,
        emails::routes::send, emails::routes::send_batch, emails::routes::list, emails::routes::get,
        emails::routes::send_for_tenant, emails::routes::list_for_tenant, emails::routes::get_for_tenant,
        emails::routes::reschedule, emails::routes::cancel,
        emails::routes::reschedule_for_tenant, emails::routes::cancel_for_tenant,
        usage::routes::for_tenant, usage::routes::list,
        audit::routes::list,
        templates::routes::create, templates::routes::list, templates::routes::get,
        templates::routes::update, templates::routes::delete, templates::routes::render,
        webhooks::routes::create, webhooks::routes::list, webhooks::routes::get,
        webhooks::routes::update, webhooks::routes::delete, webhooks::routes::deliveries,
        webhooks::routes::test, webhooks::routes::retry,
        domains::routes::create, domains::routes::list_domains, domains::routes::get,
        domains::routes::delete, domains::routes::verify, domains::routes::rotate,
        suppressions::routes::list, suppressions::routes::create, suppressions::routes::get,
        suppressions::routes::delete,
        crate::inbound::http::create_route, crate::inbound::http::list_routes,
        crate::inbound::http::get_route, crate::inbound::http::delete_route,
        crate::inbound::http::list, crate::inbound::http::get, crate::inbound::http::raw,
        crate::inbound::http::attachment,
        oauth::routes::token, oauth::routes::jwks,
        oauth::routes::create_platform, oauth::routes::list_platform, oauth::routes::revoke_platform,
        oauth::routes::create_tenant, oauth::routes::list_tenant, oauth::routes::revoke_tenant,
        openapi_json, docs,
        compat::resend::send, compat::resend::batch, compat::resend::list, compat::resend::get,
        compat::resend::update, compat::resend::cancel,
        compat::postmark::send, compat::postmark::batch,
        reputation::routes::own, reputation::routes::for_tenant, reputation::routes::list,
        reputation::routes::reinstate,
        unsubscribe::routes::page, unsubscribe::routes::one_click,
        crate::cluster::routes::list,
    ),
    modifiers(&BearerAuth, &ScopedForms, &ProblemMediaType),
    tags(
        (name = "Tenants", description = "The platform's customers (admin keys)"),
        (name = "API keys", description = "Tenant and admin keys (admin keys)"),
        (name = "Emails", description = "Sending and reading mail"),
        (name = "Usage", description = "Per-tenant usage for billing"),
        (name = "Audit", description = "Who changed tenants, keys and webhooks (`audit:read`; tenant keys see their own tenant's entries)"),
        (name = "Templates", description = "Stored designs rendered with minijinja (tenant keys; admins under /v1/tenants/{tenant}/templates)"),
        (name = "Webhooks", description = "Signed event delivery (tenant keys; admins under /v1/tenants/{tenant}/webhooks; platform-wide at /v1/admin/webhooks)"),
        (name = "Domains", description = "Sending domains: DNS verification and DKIM keys (tenant keys; admins under /v1/tenants/{tenant}/domains)"),
        (name = "Suppressions", description = "Addresses never sent to: hard bounces (expiring), complaints, manual entries (tenant keys; admins under /v1/tenants/{tenant}/suppressions)"),
        (name = "Inbound", description = "Receiving mail at a tenant's verified domains: routes (webhook, hold, reject), received messages with SPF/DKIM/DMARC verdicts and spam scores (tenant keys)"),
        (name = "OAuth", description = "OAuth 2.0 client credentials: clients (admin keys), the token endpoint, the JWKS; access tokens are accepted wherever a key is"),
        (name = "Reputation", description = "Per-tenant bounce and complaint figures, the policy that warns and pauses, reinstatement"),
        (name = "Unsubscribe", description = "RFC 8058 one-click unsubscribe: the links of List-Unsubscribe headers (no key)"),
        (name = "Operations", description = "Health, readiness, metrics, this document"),
        (name = "Tracking", description = "Tracked links and the open pixel that messages sent with tracking carry (no key; signed, self-contained URLs)"),
        (name = "Resend", description = "Resend-compatible API for existing Resend SDKs (tenant keys as Bearer); errors are Resend's {statusCode, name, message}, not problem JSON"),
        (name = "Postmark", description = "Postmark-compatible API (tenant key in X-Postmark-Server-Token); errors are Postmark's {ErrorCode, Message}, not problem JSON"),
    )
)]
pub struct ApiDoc;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(Method::GET, "/openapi.json", Access::Public, || {
            web::route().to(openapi_json)
        }),
        Endpoint::new(Method::GET, "/docs", Access::Public, || {
            web::route().to(docs)
        }),
    ]
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "Operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

/// The document as served: descriptions in plain text. The doc comments
/// they come from are also rustdoc, where `code` is marked with backticks;
/// a reader of `/docs` or of a generated client would see them literally.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    plain_text(&mut doc);
    doc
}

fn plain_text(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                match x {
                    serde_json::Value::String(s) if k == "description" || k == "summary" => {
                        *s = s.replace('`', "");
                    }
                    _ => plain_text(x),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(plain_text),
        _ => {}
    }
}

/// A readable API reference rendered from this document.
#[utoipa::path(get, path = "/docs", tag = "Operations",
    responses((status = 200, description = "HTML reference", content_type = "text/html")))]
pub async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(render_html(&document()))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One section per operation: method, path, summary, permissions,
/// parameters, request body and responses, with schema names linked to the
/// schema list at the end.
pub fn render_html(doc: &serde_json::Value) -> String {
    let mut out = String::from(concat!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Postline API reference</title>",
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}",
        "h2{border-bottom:1px solid #ddd;margin-top:2em}.op{margin:1.2em 0;padding:.6em 1em;border-left:4px solid #36c;background:#f7f9fc}",
        ".m{font-weight:700;text-transform:uppercase;margin-right:.5em}code,pre{background:#eef;padding:0 .3em}",
        "pre{padding:.6em;overflow:auto}table{border-collapse:collapse}td,th{padding:.2em .6em;border:1px solid #ddd;text-align:left}</style>",
        "</head><body><h1>Postline API reference</h1>",
    ));
    let info = &doc["info"];
    out.push_str(&format!("<p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI {}).</p>",
        esc(info["description"].as_str().unwrap_or_default()), esc(doc["openapi"].as_str().unwrap_or_default())));
    let mut by_tag: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            let Some(ops) = item.as_object() else {
                continue;
            };
            for (method, op) in ops {
                let tag = op["tags"][0].as_str().unwrap_or("Other").to_string();
                let mut html = format!("<div class=\"op\" id=\"{}-{}\"><div><span class=\"m\">{}</span><code>{}</code></div>",
                    esc(method), esc(path), esc(method), esc(path));
                let summary = op["summary"]
                    .as_str()
                    .or(op["description"].as_str())
                    .unwrap_or_default();
                html.push_str(&format!("<p>{}</p>", esc(summary)));
                if let Some(sec) = op["security"].as_array() {
                    let scopes: Vec<String> = sec
                        .iter()
                        .filter_map(|s| s["bearer"].as_array())
                        .flatten()
                        .filter_map(|v| v.as_str())
                        .map(|s| format!("<code>{}</code>", esc(s)))
                        .collect();
                    if !scopes.is_empty() {
                        html.push_str(&format!("<p>Bearer key with {}</p>", scopes.join(", ")));
                    }
                }
                if let Some(params) = op["parameters"].as_array() {
                    html.push_str(
                        "<table><tr><th>parameter</th><th>in</th><th>description</th></tr>",
                    );
                    for p in params {
                        html.push_str(&format!(
                            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                            esc(p["name"].as_str().unwrap_or_default()),
                            esc(p["in"].as_str().unwrap_or_default()),
                            esc(p["description"].as_str().unwrap_or_default())
                        ));
                    }
                    html.push_str("</table>");
                }
                if let Some(body) =
                    op["requestBody"]["content"]["application/json"]["schema"].as_object()
                {
                    html.push_str(&format!(
                        "<p>Body: {}</p>",
                        schema_ref(&serde_json::Value::Object(body.clone()))
                    ));
                }
                if let Some(resps) = op["responses"].as_object() {
                    html.push_str("<ul>");
                    for (code, r) in resps {
                        let schema = r["content"]["application/json"]["schema"].clone();
                        let schema = if schema.is_null() {
                            r["content"]["application/problem+json"]["schema"].clone()
                        } else {
                            schema
                        };
                        html.push_str(&format!(
                            "<li><b>{}</b> {} {}</li>",
                            esc(code),
                            esc(r["description"].as_str().unwrap_or_default()),
                            if schema.is_null() {
                                String::new()
                            } else {
                                schema_ref(&schema)
                            }
                        ));
                    }
                    html.push_str("</ul>");
                }
                html.push_str("</div>");
                match by_tag.iter_mut().find(|(t, _)| *t == tag) {
                    Some((_, list)) => list.push(html),
                    None => by_tag.push((tag, vec![html])),
                }
            }
        }
    }
    for (tag, ops) in by_tag {
        out.push_str(&format!("<h2>{}</h2>", esc(&tag)));
        for op in ops {
            out.push_str(&op);
        }
    }
    out.push_str("<h2>Schemas</h2>");
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        for (name, schema) in schemas {
            let pretty = serde_json::to_string_pretty(schema).unwrap_or_default();
            out.push_str(&format!(
                "<h3 id=\"schema-{0}\">{0}</h3><pre>{1}</pre>",
                esc(name),
                esc(&pretty)
            ));
        }
    }
    out.push_str("</body></html>");
    out
}

/// A schema reference as a link, or a short inline description.
fn schema_ref(schema: &serde_json::Value) -> String {
    let name = |r: &str| r.rsplit('/').next().unwrap_or(r).to_string();
    if let Some(r) = schema["$ref"].as_str() {
        let n = name(r);
        return format!("<a href=\"#schema-{0}\">{0}</a>", esc(&n));
    }
    if let Some(r) = schema["items"]["$ref"].as_str() {
        let n = name(r);
        return format!("array of <a href=\"#schema-{0}\">{0}</a>", esc(&n));
    }
    format!(
        "<code>{}</code>",
        esc(&serde_json::to_string(schema).unwrap_or_default())
    )
}
