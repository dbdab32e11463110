//! A tenant's suppression list: filter, add (manual), remove.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{pick, see_other, tenant_q};
use crate::console::render::page;
use crate::console::session::{ConsoleResult, Post};
use crate::console::users::ConsoleUser;
use crate::console::{request_id, tenant_for, Layout};
use crate::domain::Permission;
use crate::error::AppError;
use crate::state::AppState;
use crate::suppressions::service::{self, CreateSuppression, ListQuery};

#[derive(Deserialize)]
pub struct Filters {
    pub tenant: Option<String>,
    pub email: Option<String>,
    pub cursor: Option<String>,
}

pub async fn list(
    user: ConsoleUser,
    state: web::Data<AppState>,
    q: web::Query<Filters>,
) -> ConsoleResult<HttpResponse> {
    user.who.require(Permission::SuppressionsRead)?;
    let f = q.into_inner();
    let Some(tenant) = tenant_for(&state, &user, f.tenant.as_deref()).await? else {
        return pick(&state, &user, "suppressions").await;
    };
    let email = f.email.filter(|e| !e.trim().is_empty());
    let entries = service::list(
        &state,
        tenant,
        ListQuery {
            email: email.clone(),
            reason: None,
            limit: Some(50),
            cursor: f.cursor.filter(|c| !c.is_empty()),
        },
    )
    .await?;
    let can_write = user.who.0.has(Permission::SuppressionsWrite);
    Ok(page(
        "suppressions.html",
        ctx! {
            layout => Layout::new(&state, &user, Some(tenant), "suppressions").await,
            entries, email, can_write,
        },
    )?)
}

#[derive(Deserialize)]
pub struct AddForm {
    pub tenant: Option<String>,
    pub email: Option<String>,
    pub detail: Option<String>,
}

pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Post<AddForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require(Permission::SuppressionsWrite)?;
    let tenant = tenant_for(&state, &user, f.tenant.as_deref())
        .await?
        .ok_or(AppError::NotFound)?;
    let body = CreateSuppression {
        email: f.email.unwrap_or_default(),
        reason: Some("manual".into()),
        detail: f.detail,
    };
    service::create(&state, &user.actor(request_id(&req)), tenant, body).await?;
    Ok(see_other(&format!(
        "/console/suppressions{}",
        tenant_q(&user, tenant)
    )))
}

#[derive(Deserialize)]
pub struct RemoveForm {
    pub tenant: Option<String>,
    pub email: Option<String>,
}

pub async fn remove(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Post<RemoveForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require(Permission::SuppressionsWrite)?;
    let tenant = tenant_for(&state, &user, f.tenant.as_deref())
        .await?
        .ok_or(AppError::NotFound)?;
    service::delete(
        &state,
        &user.actor(request_id(&req)),
        tenant,
        f.email.as_deref().unwrap_or_default(),
    )
    .await?;
    Ok(see_other(&format!(
        "/console/suppressions{}",
        tenant_q(&user, tenant)
    )))
}
