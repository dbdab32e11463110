//! Webhook endpoints: a tenant's, or the platform's for admins without a
//! tenant; create (the signing secret shown once), the deliveries log of
//! each, send a test event, retry a failed delivery, delete.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{input, see_other, tenant_q};
use crate::console::render::page;
use crate::console::session::{ConsoleResult, Post};
use crate::console::users::ConsoleUser;
use crate::console::{request_id, tenant_for, Layout, TenantQuery};
use crate::db::pagination::PageQuery;
use crate::domain::{Permission, TenantId};
use crate::state::AppState;
use crate::webhooks::model::Owner;
use crate::webhooks::{retry, service};

fn owner(t: Option<TenantId>) -> Owner {
    t.map_or(Owner::Platform, Owner::Tenant)
}

async fn render(
    state: &AppState,
    user: &ConsoleUser,
    tenant: Option<TenantId>,
    created: Option<serde_json::Value>,
) -> ConsoleResult<HttpResponse> {
    let page_req = || {
        PageQuery {
            limit: Some(20),
            cursor: None,
        }
        .validate()
    };
    let hooks = service::list(state, owner(tenant), page_req()?).await?;
    let mut rows = Vec::new();
    for h in hooks.data {
        let id = h.id.to_string();
        let log = service::deliveries(state, owner(tenant), &id, page_req()?).await?;
        rows.push(json!({ "hook": h, "deliveries": log.data }));
    }
    let can_write = user.who.0.has(Permission::WebhooksWrite);
    Ok(page(
        "webhooks.html",
        ctx! {
            layout => Layout::new(state, user, tenant, "webhooks").await,
            hooks => rows, created, can_write, platform => tenant.is_none(),
        },
    )?)
}

pub async fn list(
    user: ConsoleUser,
    state: web::Data<AppState>,
    q: web::Query<TenantQuery>,
) -> ConsoleResult<HttpResponse> {
    user.who.require(Permission::WebhooksRead)?;
    let tenant = tenant_for(&state, &user, q.tenant.as_deref()).await?;
    render(&state, &user, tenant, None).await
}

#[derive(Deserialize)]
pub struct CreateForm {
    pub tenant: Option<String>,
    pub url: Option<String>,
    #[serde(default)]
    pub events: Vec<String>,
    pub description: Option<String>,
}

pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Post<CreateForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require(Permission::WebhooksWrite)?;
    let tenant = tenant_for(&state, &user, f.tenant.as_deref()).await?;
    let events = if f.events.is_empty() {
        vec!["*".to_string()]
    } else {
        f.events
    };
    let body = input(json!({ "url": f.url.unwrap_or_default(), "events": events,
        "description": f.description }))?;
    let actor = user.actor(request_id(&req));
    let created = service::create(&state, &actor, owner(tenant), body).await?;
    let created = serde_json::to_value(&created).unwrap_or_default();
    render(&state, &user, tenant, Some(created)).await
}

#[derive(Deserialize)]
pub struct HookForm {
    pub tenant: Option<String>,
}

pub async fn test(
    state: web::Data<AppState>,
    path: web::Path<String>,
    post: Post<HookForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require(Permission::WebhooksWrite)?;
    let tenant = tenant_for(&state, &user, f.tenant.as_deref()).await?;
    service::test(&state, owner(tenant), &path).await?;
    let q = tenant.map(|t| tenant_q(&user, t)).unwrap_or_default();
    Ok(see_other(&format!("/console/webhooks{q}")))
}

pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    post: Post<HookForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require(Permission::WebhooksWrite)?;
    let tenant = tenant_for(&state, &user, f.tenant.as_deref()).await?;
    let actor = user.actor(request_id(&req));
    service::delete(&state, &actor, owner(tenant), &path).await?;
    let q = tenant.map(|t| tenant_q(&user, t)).unwrap_or_default();
    Ok(see_other(&format!("/console/webhooks{q}")))
}

/// Retries a failed delivery now (`webhooks::retry`); another tenant's
/// delivery is a 404.
pub async fn retry(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    post: Post<HookForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require(Permission::WebhooksWrite)?;
    let tenant = tenant_for(&state, &user, f.tenant.as_deref()).await?;
    let actor = user.actor(request_id(&req));
    retry::retry(&state, &actor, owner(tenant), None, &path).await?;
    let q = tenant.map(|t| tenant_q(&user, t)).unwrap_or_default();
    Ok(see_other(&format!("/console/webhooks{q}")))
}
