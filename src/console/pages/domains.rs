//! Sending domains: the DNS records to publish (name, type, value, each in
//! a read-only field to copy), add a domain, the Verify button.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{input, pick, see_other, tenant_q};
use crate::console::render::page;
use crate::console::session::{ConsoleResult, Post};
use crate::console::users::ConsoleUser;
use crate::console::{request_id, tenant_for, Layout, TenantQuery};
use crate::db::pagination::PageQuery;
use crate::domain::Permission;
use crate::domains::model::DomainRef;
use crate::domains::service;
use crate::error::AppError;
use crate::state::AppState;

pub async fn list(
    user: ConsoleUser,
    state: web::Data<AppState>,
    q: web::Query<TenantQuery>,
) -> ConsoleResult<HttpResponse> {
    user.who.require(Permission::DomainsRead)?;
    let Some(tenant) = tenant_for(&state, &user, q.tenant.as_deref()).await? else {
        return pick(&state, &user, "domains").await;
    };
    let page_req = PageQuery {
        limit: Some(100),
        cursor: None,
    }
    .validate()?;
    let domains = service::list(&state.domains, tenant, page_req).await?;
    let can_write = user.who.0.has(Permission::DomainsWrite);
    Ok(page(
        "domains.html",
        ctx! { layout => Layout::new(&state, &user, Some(tenant), "domains").await, domains, can_write },
    )?)
}

#[derive(Deserialize)]
pub struct CreateForm {
    pub tenant: Option<String>,
    pub name: Option<String>,
}

pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Post<CreateForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require(Permission::DomainsWrite)?;
    let tenant = tenant_for(&state, &user, f.tenant.as_deref())
        .await?
        .ok_or(AppError::NotFound)?;
    let body = input(json!({ "name": f.name.unwrap_or_default() }))?;
    let actor = user.actor(request_id(&req));
    service::create(&state.domains, &actor, tenant, body).await?;
    Ok(see_other(&format!(
        "/console/domains{}",
        tenant_q(&user, tenant)
    )))
}

#[derive(Deserialize)]
pub struct VerifyForm {
    pub tenant: Option<String>,
}

pub async fn verify(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    post: Post<VerifyForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require(Permission::DomainsWrite)?;
    let tenant = tenant_for(&state, &user, f.tenant.as_deref())
        .await?
        .ok_or(AppError::NotFound)?;
    let actor = user.actor(request_id(&req));
    service::verify(&state.domains, &actor, tenant, DomainRef::parse(&path)).await?;
    Ok(see_other(&format!(
        "/console/domains{}",
        tenant_q(&user, tenant)
    )))
}
