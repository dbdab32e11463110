//! `GET|HEAD /c/{token}` → 302 to the link's URL; `GET|HEAD /o/{token}.gif`
//! → a 1×1 GIF. No key, no database: the token is verified with the link
//! key, the hit pushed to the events' sink (bounded; see
//! [`super::events`]), and the answer sent. Anything that does not verify
//! is a 404, so a link never redirects where its sender did not point it.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;

use super::events::Hit;
use super::machine::Seen;
use super::token::Kind;
use crate::error::AppError;
use crate::routes::{Access, Endpoint};
use crate::state::AppState;

/// A transparent 1×1 GIF (43 bytes).
pub const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn record(req: &HttpRequest, state: &AppState, link: super::token::Link) {
    let t = &state.tracking;
    let ip = crate::auth::extract::client_ip(req, state.settings.auth.trust_x_forwarded_for);
    let user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let reason = t.detector.by_request(&Seen {
        head: req.method() == Method::HEAD,
        ip,
        user_agent: &user_agent,
    });
    t.sink.push(Hit {
        link,
        at: Utc::now(),
        ip,
        user_agent,
        reason,
    });
}

/// Follows a tracked link.
#[utoipa::path(method(get, head), path = "/c/{token}", tag = "Tracking",
    params(("token" = String, Path, description = "The signed link: payload and signature, as written in the message.")),
    responses(
        (status = 302, description = "To the link's destination; the click is recorded after the answer"),
        (status = 404, description = "The link does not verify", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn click(
    req: HttpRequest,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let link = state
        .tracking
        .keys
        .verify(Kind::Click, &token)
        .ok_or(AppError::NotFound)?;
    let Some(url) = link.url.clone() else {
        return Err(AppError::NotFound);
    };
    record(&req, &state, link);
    Ok(HttpResponse::Found()
        .insert_header(("location", url))
        .insert_header(("cache-control", "no-store"))
        .insert_header(("referrer-policy", "no-referrer"))
        .finish())
}

/// The open pixel.
#[utoipa::path(method(get, head), path = "/o/{token}.gif", tag = "Tracking",
    params(("token" = String, Path, description = "The signed open link: payload and signature.")),
    responses(
        (status = 200, description = "A transparent 1×1 GIF; the open is recorded after the answer", content_type = "image/gif"),
        (status = 404, description = "The link does not verify", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn open(
    req: HttpRequest,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let link = state
        .tracking
        .keys
        .verify(Kind::Open, &token)
        .ok_or(AppError::NotFound)?;
    record(&req, &state, link);
    Ok(HttpResponse::Ok()
        .content_type("image/gif")
        .insert_header(("cache-control", "no-store, no-cache, must-revalidate"))
        .body(PIXEL))
}

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(Method::GET, "/c/{token}", Access::Public, || {
            web::route().to(click)
        }),
        Endpoint::new(Method::HEAD, "/c/{token}", Access::Public, || {
            web::route().to(click)
        }),
        Endpoint::new(Method::GET, "/o/{token}.gif", Access::Public, || {
            web::route().to(open)
        }),
        Endpoint::new(Method::HEAD, "/o/{token}.gif", Access::Public, || {
            web::route().to(open)
        }),
    ]
}
