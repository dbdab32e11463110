//! The second step of a sign-in with TOTP: the password was right, the
//! browser holds a challenge cookie, and a current, unused code opens the
//! session. Wrong codes count towards the sign-in throttles.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::{anonymous_csrf, anonymous_form, secure, start_session};
use super::see_other;
use crate::console::second_factor::{self, Verdict};
use crate::console::session::{field, read_form, removal, ConsoleResult};
use crate::error::AppError;
use crate::state::AppState;

/// The pending sign-in's random token (its SHA-256 is in Postgres).
pub const CHALLENGE_COOKIE: &str = "postline_console_challenge";

fn challenge(req: &HttpRequest) -> String {
    req.cookie(CHALLENGE_COOKIE)
        .map(|c| c.value().to_string())
        .unwrap_or_default()
}

/// Back to the password form, the void challenge cookie removed.
fn start_over(state: &AppState, req: &HttpRequest) -> ConsoleResult<HttpResponse> {
    let mut resp = see_other("/console/login");
    resp.add_cookie(&removal(CHALLENGE_COOKIE, secure(state, req)))
        .map_err(|e| AppError::internal("cookie", e))?;
    Ok(resp)
}

fn code_form(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    error: Option<String>,
) -> ConsoleResult<HttpResponse> {
    anonymous_form(
        state,
        req,
        status,
        "login_totp.html",
        serde_json::json!({ "error": error }),
    )
}

pub async fn form(req: HttpRequest, state: web::Data<AppState>) -> ConsoleResult<HttpResponse> {
    if second_factor::challenge_email(&state.pool, &challenge(&req))
        .await?
        .is_none()
    {
        return start_over(&state, &req);
    }
    code_form(&state, &req, StatusCode::OK, None)
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> ConsoleResult<HttpResponse> {
    let body = read_form(&req, payload.into_inner()).await?;
    anonymous_csrf(&req, &body)?;
    let token = challenge(&req);
    let Some(email) = second_factor::challenge_email(&state.pool, &token).await? else {
        return start_over(&state, &req);
    };
    let ip = crate::auth::extract::client_ip(&req, state.settings.auth.trust_x_forwarded_for);
    let limits = &state.console;
    let device = limits.known_device(&req, &email);
    if let Some(secs) = limits.blocked(ip, &email, device.as_deref()) {
        crate::metrics::limited("console_login");
        let text = format!("Too many failed sign-ins. Try again in {secs} s.");
        let mut resp = code_form(&state, &req, StatusCode::TOO_MANY_REQUESTS, Some(text))?;
        resp.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from(secs),
        );
        return Ok(resp);
    }
    let code = field(&body, "code").unwrap_or_default();
    match second_factor::complete(&state.pool, &state.vault, &token, &code).await? {
        Verdict::Accepted(owner, user) => start_session(&state, &req, owner, user, &email).await,
        Verdict::Expired => start_over(&state, &req),
        Verdict::Refused { retry } => {
            limits.failed(ip, &email, device).await;
            tracing::info!(retry, "console sign-in code refused");
            if !retry {
                return start_over(&state, &req);
            }
            let text = "Wrong or already used code. Enter the current code of your authenticator.";
            code_form(&state, &req, StatusCode::UNAUTHORIZED, Some(text.into()))
        }
    }
}
