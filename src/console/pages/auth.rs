//! Sign-in, sign-out ("everywhere" too), invitation links.
//! The code step of a sign-in with TOTP is `login_totp`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::see_other;
use crate::console::render::{self, html};
use crate::console::session::{
    self, cookie, field, is_tls, read_form, removal, ConsoleError, ConsoleResult, Post, COOKIE,
    LOGIN_COOKIE,
};
use crate::console::users;
use crate::console::{device, second_factor, sessions};
use crate::error::AppError;
use crate::state::AppState;

pub(super) fn secure(state: &AppState, req: &HttpRequest) -> bool {
    is_tls(req, state.settings.auth.trust_x_forwarded_for)
}

/// A form page for someone without a session: a fresh double-submit token
/// in a cookie and in the form.
pub(super) fn anonymous_form(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    template: &str,
    ctx: serde_json::Value,
) -> ConsoleResult<HttpResponse> {
    let (token, _) = sessions::new_token();
    let mut ctx = ctx;
    ctx["csrf"] = token.expose().into();
    let mut resp = html(status, render::render(template, ctx)?);
    resp.add_cookie(&cookie(
        LOGIN_COOKIE,
        token.expose().to_string(),
        secure(state, req),
    ))
    .map_err(|e| AppError::internal("cookie", e))?;
    Ok(resp)
}

/// The double-submit check of a form sent without a session.
pub(super) fn anonymous_csrf(req: &HttpRequest, body: &[u8]) -> ConsoleResult<()> {
    let sent = field(body, "csrf").unwrap_or_default();
    let kept = req.cookie(LOGIN_COOKIE).map(|c| c.value().to_string());
    match kept {
        Some(k) if !k.is_empty() && session::same_token(&sent, &k) => Ok(()),
        _ => Err(ConsoleError::Csrf),
    }
}

pub async fn login_form(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ConsoleResult<HttpResponse> {
    if let Some(c) = req.cookie(COOKIE) {
        if sessions::session(&state.pool, c.value()).await?.is_some() {
            return Ok(see_other("/console"));
        }
    }
    let done = req.query_string().contains("password_set=1");
    anonymous_form(
        &state,
        &req,
        StatusCode::OK,
        "login.html",
        serde_json::json!({ "password_set": done }),
    )
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> ConsoleResult<HttpResponse> {
    let body = read_form(&req, payload.into_inner()).await?;
    anonymous_csrf(&req, &body)?;
    let email = field(&body, "email").unwrap_or_default();
    let password = field(&body, "password").unwrap_or_default();
    let email_key = email.trim().to_ascii_lowercase();
    let ip = crate::auth::extract::client_ip(&req, state.settings.auth.trust_x_forwarded_for);
    let limits = &state.console;
    let device = limits.known_device(&req, &email_key);
    if let Some(secs) = limits.blocked(ip, &email_key, device.as_deref()) {
        crate::metrics::limited("console_login");
        let mut resp = anonymous_form(
            &state,
            &req,
            StatusCode::TOO_MANY_REQUESTS,
            "login.html",
            serde_json::json!({
                "email": email,
                "error": format!("Too many failed sign-ins. Try again in {secs} s."),
            }),
        )?;
        resp.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from(secs),
        );
        return Ok(resp);
    }
    let Some(user) = users::check_login(&state.pool, &email, &password).await? else {
        limits.failed(ip, &email_key, device).await;
        tracing::info!("console sign-in refused");
        return anonymous_form(
            &state,
            &req,
            StatusCode::UNAUTHORIZED,
            "login.html",
            serde_json::json!({ "email": email, "error": "Wrong e-mail or password." }),
        );
    };
    if second_factor::required(&state.pool, user.owner(), user.id).await? {
        let token = second_factor::open_challenge(&state.pool, user.owner(), user.id).await?;
        tracing::info!(user = %user.id, "console sign-in: password accepted, code due");
        let mut resp = see_other("/console/login/totp");
        resp.add_cookie(&cookie(
            super::login_totp::CHALLENGE_COOKIE,
            token.expose().to_string(),
            secure(&state, &req),
        ))
        .map_err(|e| AppError::internal("cookie", e))?;
        return Ok(resp);
    }
    start_session(&state, &req, user.owner(), user.id, &user.email).await
}

/// Opens a session for a user who passed every check: the session cookie,
/// a fresh device cookie for `email` (`console::device`), the sign-in's own
/// cookies removed.
pub(super) async fn start_session(
    state: &AppState,
    req: &HttpRequest,
    owner: crate::console::owner::Owner,
    user: uuid::Uuid,
    email: &str,
) -> ConsoleResult<HttpResponse> {
    let ttl = state.settings.console.session_ttl_secs;
    let token = sessions::open_session(&state.pool, owner, user, ttl).await?;
    tracing::info!(user = %user, "console sign-in");
    let secure = secure(state, req);
    let known = state
        .console
        .device
        .issue(&email.to_ascii_lowercase(), chrono::Utc::now());
    let mut known = cookie(device::COOKIE, known, secure);
    known.set_max_age(actix_web::cookie::time::Duration::days(
        device::LIFETIME_DAYS,
    ));
    let mut resp = see_other("/console");
    resp.add_cookie(&cookie(COOKIE, token.expose().to_string(), secure))
        .and_then(|_| resp.add_cookie(&known))
        .and_then(|_| resp.add_cookie(&removal(LOGIN_COOKIE, secure)))
        .and_then(|_| resp.add_cookie(&removal(super::login_totp::CHALLENGE_COOKIE, secure)))
        .map_err(|e| AppError::internal("cookie", e))?;
    Ok(resp)
}

#[derive(Deserialize)]
pub struct LogoutForm {
    /// "1": end every session of this user, not only this one.
    pub everywhere: Option<String>,
}

pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Post<LogoutForm>,
) -> ConsoleResult<HttpResponse> {
    let everywhere = post.form.everywhere.is_some();
    sessions::close(&state.pool, &post.user, everywhere).await?;
    tracing::info!(user = %post.user.id, everywhere, "console sign-out");
    let mut resp = see_other("/console/login");
    resp.add_cookie(&removal(COOKIE, secure(&state, &req)))
        .map_err(|e| AppError::internal("cookie", e))?;
    Ok(resp)
}

pub async fn invite_form(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ConsoleResult<HttpResponse> {
    if !sessions::invitation_open(&state.pool, &path).await? {
        return Err(AppError::NotFound.into());
    }
    anonymous_form(
        &state,
        &req,
        StatusCode::OK,
        "invite.html",
        serde_json::json!({ "token": path.as_str() }),
    )
}

pub async fn invite(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> ConsoleResult<HttpResponse> {
    let body = read_form(&req, payload.into_inner()).await?;
    anonymous_csrf(&req, &body)?;
    let password = field(&body, "password").unwrap_or_default();
    if field(&body, "confirm").as_deref() != Some(password.as_str()) {
        return Err(AppError::invalid("confirm", "the two passwords differ").into());
    }
    let user = sessions::accept_invitation(&state.pool, &path, &password).await?;
    tracing::info!(user = %user, "console password set from an invitation");
    Ok(see_other("/console/login?password_set=1"))
}
