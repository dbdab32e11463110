//! `POST /u/{token}`: the RFC 8058 one-click unsubscribe (no key; the body
//! `List-Unsubscribe=One-Click` as mailbox providers send it, or the page's
//! button); `GET /u/{token}`: a page whose button posts (a GET never
//! unsubscribes: link scanners follow GETs). A forged token → 404.

use actix_web::http::{header, Method};
use actix_web::{web, HttpResponse};
use futures_util::StreamExt;

use crate::error::{AppError, Problem};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;

/// The most body bytes read (the one-click body is 26).
const MAX_BODY: usize = 4096;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(Method::GET, "/u/{token}", Access::Public, || {
            web::route().to(page)
        }),
        Endpoint::new(Method::POST, "/u/{token}", Access::Public, || {
            web::route().to(one_click)
        }),
    ]
}

fn html(status: actix_web::http::StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Robots-Tag", "noindex"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ))
        .body(format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#1a1a1a}}\
             button{{font-size:1rem;padding:.6rem 1.2rem;background:#1d4ed8;color:#fff;border:0;border-radius:4px;cursor:pointer}}\
             button:focus{{outline:3px solid #f59e0b;outline-offset:2px}}</style></head>\
             <body><main><h1>{title}</h1>{body}</main></body></html>\n"
        ))
}

/// The token as given: base32 only, so it is safe in HTML and URLs.
fn clean(token: &str) -> Result<&str, AppError> {
    if token.is_empty() || token.len() > 512 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AppError::NotFound);
    }
    Ok(token)
}

/// The unsubscribe page: a form whose button posts the one-click body.
#[utoipa::path(get, path = "/u/{token}", tag = "Unsubscribe",
    params(("token" = String, Path, description = "The token of a List-Unsubscribe link")),
    responses((status = 200, description = "An HTML page with a button that unsubscribes (by POST); the GET changes nothing", content_type = "text/html"),
              (status = 404, body = Problem, description = "A forged or unknown token")))]
pub async fn page(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let token = clean(&path)?;
    super::service::keys(&state.settings)?
        .verify(token)
        .ok_or(AppError::NotFound)?;
    Ok(html(
        actix_web::http::StatusCode::OK,
        "Unsubscribe",
        &format!(
            "<p>Stop receiving these mailings at this address? Transactional messages, \
             such as receipts and password resets, still arrive.</p>\
             <form method=\"post\" action=\"/u/{token}\">\
             <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <button type=\"submit\">Unsubscribe</button></form>"
        ),
    ))
}

/// One-click unsubscribe (RFC 8058): the recipient is suppressed for the
/// token's tenant and stream (reason `unsubscribe`).
#[utoipa::path(post, path = "/u/{token}", tag = "Unsubscribe",
    params(("token" = String, Path, description = "The token of a List-Unsubscribe link")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "List-Unsubscribe=One-Click"),
    responses((status = 200, description = "Unsubscribed (again: still 200)", content_type = "text/html"),
              (status = 404, body = Problem, description = "A forged or unknown token")))]
pub async fn one_click(
    state: web::Data<AppState>,
    path: web::Path<String>,
    mut payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let token = clean(&path)?.to_string();
    // The body is read (bounded) and not required: providers send the
    // one-click body urlencoded or as multipart, the token is what counts.
    let mut read = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| AppError::invalid("body", "could not be read"))?;
        read += chunk.len();
        if read > MAX_BODY {
            return Err(AppError::PayloadTooLarge { limit: MAX_BODY });
        }
    }
    let keys = super::service::keys(&state.settings)?;
    super::service::unsubscribe(&keys, &state.pool, &token, "one-click").await?;
    Ok(html(
        actix_web::http::StatusCode::OK,
        "You are unsubscribed",
        "<p>This address will get no more of these mailings.</p>",
    ))
}
