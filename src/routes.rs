//! The one table of HTTP endpoints. Every capability lists its endpoints
//! here as `(method, path, access, handler)`; the server is built from this
//! table, the OpenAPI test checks the same table against `/openapi.json`, so
//! a route cannot exist without being documented, and the isolation matrix
//! (`tests/suite/isolation.rs`) drives every route with the keys its
//! [`Access`] names, so a route cannot exist without being checked for 403s
//! and cross-tenant 404s.

use actix_web::http::Method;
use actix_web::{web, Route};

use crate::domain::Permission;

/// Who may call an endpoint: declared with the route, checked by the
/// isolation matrix against what the handler really does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No key (health, metrics, the API document).
    Public,
    /// Tenant keys with the permission, acting for their own tenant; admin
    /// keys are refused (they use the `/v1/tenants/{tenant}/…` form).
    Tenant(Permission),
    /// Tenant keys (their own tenant) and admin keys, with the permission.
    Any(Permission),
    /// Admin keys with the permission; tenant keys get 403.
    Admin(Permission),
    /// A web console page or form (`src/console/`): HTML, a session cookie
    /// instead of a key, a CSRF token on every POST. Not part of the JSON
    /// API, so not in the OpenAPI document nor in the key-driven isolation
    /// and body-error matrices; `tests/suite/console.rs` drives every such
    /// route without a session (GET: redirect to the login page, POST: 403)
    /// and checks the console's own isolation (tenant users, roles).
    Console,
}

impl Access {
    pub fn permission(self) -> Option<Permission> {
        match self {
            Access::Public | Access::Console => None,
            Access::Tenant(p) | Access::Any(p) | Access::Admin(p) => Some(p),
        }
    }
}

pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub route: fn() -> Route,
}

impl Endpoint {
    pub fn new(method: Method, path: &'static str, access: Access, route: fn() -> Route) -> Self {
        Self {
            method,
            path,
            access,
            route,
        }
    }
}

/// Every endpoint, in registration order (a literal path such as
/// `/v1/emails/batch` is listed before the pattern `/v1/emails/{email}`).
pub fn all() -> Vec<Endpoint> {
    [
        crate::http::endpoints(),
        crate::tenants::routes::endpoints(),
        crate::reputation::routes::endpoints(),
        crate::keys::routes::endpoints(),
        crate::emails::routes::endpoints(),
        crate::templates::routes::endpoints(),
        crate::webhooks::routes::endpoints(),
        crate::usage::routes::endpoints(),
        crate::domains::routes::endpoints(),
        crate::suppressions::routes::endpoints(),
        // issue 28: tenants' inbound mail.
        crate::inbound::http::endpoints(),
        crate::audit::routes::endpoints(),
        crate::oauth::routes::endpoints(),
        crate::openapi::endpoints(),
        // issue 14: the Resend- and Postmark-compatible APIs.
        crate::compat::resend::endpoints(),
        crate::compat::postmark::endpoints(),
        crate::console::endpoints(),
        // issue 26: RFC 8058 one-click unsubscribe.
        crate::unsubscribe::routes::endpoints(),
        // issue 27: the node registry.
        crate::cluster::routes::endpoints(),
        // issue 29: tracked links and the open pixel.
        crate::tracking::routes::endpoints(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Registers the table: one resource per path (in first-seen order) with a
/// method-guarded route per endpoint, so another method on a known path is
/// a 405, not a 404.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let endpoints = all();
    let mut paths: Vec<&'static str> = Vec::new();
    for e in &endpoints {
        if !paths.contains(&e.path) {
            paths.push(e.path);
        }
    }
    for path in paths {
        let mut resource = web::resource(path);
        for e in endpoints.iter().filter(|e| e.path == path) {
            resource = resource.route((e.route)().method(e.method.clone()));
        }
        cfg.service(resource);
    }
}
