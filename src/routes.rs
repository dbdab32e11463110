//! The one table of HTTP endpoints. Every capability lists its endpoints
//! here as `(method, path, handler)`; the server is built from this table and
//! the OpenAPI test checks the same table against `/openapi.json`, so a route
//! cannot exist without being documented.

use actix_web::http::Method;
use actix_web::{web, Route};

pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub route: fn() -> Route,
}

impl Endpoint {
    pub fn new(method: Method, path: &'static str, route: fn() -> Route) -> Self {
        Self {
            method,
            path,
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
        crate::keys::routes::endpoints(),
        crate::emails::routes::endpoints(),
        crate::templates::routes::endpoints(),
        crate::webhooks::routes::endpoints(),
        crate::usage::routes::endpoints(),
        crate::oauth::routes::endpoints(),
        crate::openapi::endpoints(),
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
