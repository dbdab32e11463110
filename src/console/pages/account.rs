//! `/console/account`: the signed-in user's own TOTP (any console user, not
//! only admins): set up (a new secret shown once as base32 and an
//! `otpauth://` URI), turn on with a current code, turn off with one.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::see_other;
use crate::console::render::{html, render};
use crate::console::second_factor;
use crate::console::session::{ConsoleResult, Post};
use crate::console::users::ConsoleUser;
use crate::console::{request_id, Layout};
use crate::error::AppError;
use crate::state::AppState;

async fn account_page(
    state: &AppState,
    user: &ConsoleUser,
    status: StatusCode,
    error: Option<&str>,
) -> ConsoleResult<HttpResponse> {
    let totp = second_factor::status(&state.pool, &state.vault, user).await?;
    Ok(html(
        status,
        render(
            "account.html",
            ctx! { layout => Layout::new(state, user, None, "account").await, totp, error },
        )?,
    ))
}

pub async fn show(user: ConsoleUser, state: web::Data<AppState>) -> ConsoleResult<HttpResponse> {
    account_page(&state, &user, StatusCode::OK, None).await
}

#[derive(Deserialize)]
pub struct NoFields {}

pub async fn setup(
    state: web::Data<AppState>,
    post: Post<NoFields>,
) -> ConsoleResult<HttpResponse> {
    second_factor::start(&state.pool, &state.vault, &post.user).await?;
    Ok(see_other("/console/account"))
}

#[derive(Deserialize)]
pub struct CodeForm {
    pub code: Option<String>,
}

/// A wrong code here counts towards the user's sign-in throttle too (so a
/// stolen session cannot guess its way to turning TOTP off).
async fn with_code(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Post<CodeForm>,
    enable: bool,
) -> ConsoleResult<HttpResponse> {
    let limits = &state.console;
    if let Some(secs) = limits.by_email.blocked_key(&post.user.email) {
        crate::metrics::limited("console_login");
        return Err(AppError::TooManyRequests {
            code: "too_many_failures",
            detail: format!("Too many wrong codes. Try again in {secs} s."),
            retry_after_secs: secs,
        }
        .into());
    }
    let code = post.form.code.unwrap_or_default();
    let actor = post.user.actor(request_id(&req));
    let done = if enable {
        second_factor::enable(&state.pool, &state.vault, &post.user, actor, &code).await?
    } else {
        second_factor::disable(&state.pool, &state.vault, &post.user, actor, &code).await?
    };
    if done {
        tracing::info!(user = %post.user.id, enable, "console TOTP changed");
        return Ok(see_other("/console/account"));
    }
    limits.by_email.failed_key(post.user.email.clone());
    let text = "That code is not right (or was used already). Enter the current code.";
    account_page(
        &state,
        &post.user,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some(text),
    )
    .await
}

pub async fn enable(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Post<CodeForm>,
) -> ConsoleResult<HttpResponse> {
    with_code(req, state, post, true).await
}

pub async fn disable(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Post<CodeForm>,
) -> ConsoleResult<HttpResponse> {
    with_code(req, state, post, false).await
}
