//! Pages: minijinja templates compiled into the binary, the one vendored
//! stylesheet and the two vendored scripts (copy buttons, local times)
//! inlined and allowed by their hashes in a strict CSP; the filters of
//! `format` (`when`, `badge`).

use std::sync::OnceLock;

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use base64::Engine;
use minijinja::Environment;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::AppError;

pub const CSS: &str = include_str!("assets/console.css");
/// Copy buttons (the domains page); pages work without it.
pub const COPY_JS: &str = include_str!("assets/copy.js");
/// Hover texts of `<time>` in the viewer's zone; pages work without it.
pub const TIME_JS: &str = include_str!("assets/time.js");

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("login_totp.html", include_str!("templates/login_totp.html")),
    ("account.html", include_str!("templates/account.html")),
    ("invite.html", include_str!("templates/invite.html")),
    ("error.html", include_str!("templates/error.html")),
    ("tenants.html", include_str!("templates/tenants.html")),
    ("tenant.html", include_str!("templates/tenant.html")),
    ("keys.html", include_str!("templates/keys.html")),
    ("messages.html", include_str!("templates/messages.html")),
    ("message.html", include_str!("templates/message.html")),
    ("domains.html", include_str!("templates/domains.html")),
    (
        "suppressions.html",
        include_str!("templates/suppressions.html"),
    ),
    ("webhooks.html", include_str!("templates/webhooks.html")),
    ("usage.html", include_str!("templates/usage.html")),
    ("inbound.html", include_str!("templates/inbound.html")),
    (
        "inbound_message.html",
        include_str!("templates/inbound_message.html"),
    ),
    ("queue.html", include_str!("templates/queue.html")),
    ("pick.html", include_str!("templates/pick.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("reputation.html", include_str!("templates/reputation.html")),
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for (name, source) in TEMPLATES {
            // The templates are part of the binary; a syntax error is a
            // build defect that the console tests catch on first render.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "console template does not compile");
            }
        }
        env.add_global("css", CSS);
        env.add_global("copy_js", COPY_JS);
        env.add_global("time_js", TIME_JS);
        env.add_filter("when", super::format::when);
        env.add_filter("badge", super::format::badge);
        env.add_filter("percent", |v: f64| format!("{:.3} %", v * 100.0));
        // This environment's own filter (tenant templates are not affected).
        env.add_filter("urlencode", |v: String| -> String {
            percent_encoding::utf8_percent_encode(&v, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        });
        env
    })
}

/// The page's Content-Security-Policy: nothing from anywhere but this
/// origin, the inlined stylesheet and scripts by their hashes (no other
/// script), frames only from here (the sandboxed message HTML).
pub fn csp() -> (header::HeaderName, String) {
    static VALUE: OnceLock<String> = OnceLock::new();
    let v = VALUE.get_or_init(|| {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s));
        let (hash, js, time) = (b64(CSS), b64(COPY_JS), b64(TIME_JS));
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; script-src 'sha256-{js}' 'sha256-{time}'; \
             img-src 'self' data:; \
             frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    });
    (header::CONTENT_SECURITY_POLICY, v.clone())
}

/// An HTML response with the console's headers.
pub fn html(status: StatusCode, body: String) -> HttpResponse {
    let mut resp = HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(csp())
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body);
    if status.is_client_error() || status.is_server_error() {
        // An HTML page, not problem JSON: keep it past the bare-error rewrite.
        resp.extensions_mut().insert(crate::http::ProtocolErrorBody);
    }
    resp
}

/// Renders `name` with `ctx`.
pub fn render<S: Serialize>(name: &str, ctx: S) -> Result<String, AppError> {
    env()
        .get_template(name)
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(ctx))))
        .map_err(|e| AppError::internal("console template", format!("{name}: {e:#}")))
}

pub fn page<S: Serialize>(name: &str, ctx: S) -> Result<HttpResponse, AppError> {
    Ok(html(StatusCode::OK, render(name, ctx)?))
}

/// The error page; never fails (a plain fallback if the template did).
pub fn error_page(status: u16, title: &str, detail: &str, fields: &[String]) -> String {
    let ctx = ctx! { status, title, detail, fields };
    render("error.html", ctx).unwrap_or_else(|_| format!("<!doctype html><title>{status}</title>"))
}
