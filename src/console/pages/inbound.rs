//! Inbound mail (issue 28): the tenant's routes (create with the endpoint
//! picked from its webhooks, delete) and the received messages, newest
//! first with the listing's keyset cursor; one message's page (verdicts,
//! headers, text, stripped reply, attachments downloaded through the
//! session, the sent message it answers). The same `inbound::service` calls
//! as `/v1/inbound`; a service's refusal of a new route is shown in the form.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{input, pick, see_other, tenant_q};
use crate::console::render::{html, render};
use crate::console::session::{ConsoleResult, Post};
use crate::console::users::ConsoleUser;
use crate::console::{request_id, tenant_for, Layout, TenantQuery};
use crate::db::pagination::PageQuery;
use crate::domain::{Permission, TenantId};
use crate::error::{AppError, AppResult};
use crate::inbound::service::{self, CreateRoute, ListQuery};
use crate::state::AppState;
use crate::webhooks::model::Owner;

/// `GET /console/inbound`: `?tenant=` (admins) and the messages' cursor.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    pub tenant: Option<String>,
    pub cursor: Option<String>,
}

/// The new-route form, as typed (kept when the service refuses it).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RouteForm {
    pub tenant: Option<String>,
    #[serde(rename = "match")]
    pub match_addr: Option<String>,
    pub action: Option<String>,
    pub webhook_id: Option<String>,
    pub format: Option<String>,
}

/// A refused form: the sentence and its field messages.
#[derive(Serialize)]
struct FormError {
    code: &'static str,
    detail: String,
    fields: Vec<String>,
}

fn form_error(e: &AppError) -> Option<FormError> {
    match e {
        AppError::Validation {
            code,
            detail,
            errors,
        } => Some(FormError {
            code,
            detail: detail.clone(),
            fields: errors
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect(),
        }),
        AppError::Conflict { code, detail } => Some(FormError {
            code,
            detail: detail.clone(),
            fields: Vec::new(),
        }),
        _ => None,
    }
}

fn blank(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

async fn render_list(
    state: &AppState,
    user: &ConsoleUser,
    tenant: TenantId,
    cursor: Option<String>,
    form: Option<(RouteForm, FormError)>,
) -> ConsoleResult<HttpResponse> {
    let all = || {
        PageQuery {
            limit: Some(100),
            cursor: None,
        }
        .validate()
    };
    let routes = service::list_routes(&state.pool, tenant, all()?).await?;
    let hooks = crate::webhooks::service::list(state, Owner::Tenant(tenant), all()?).await?;
    let query = ListQuery {
        limit: Some(50),
        cursor,
        ..ListQuery::default()
    };
    let messages = service::list(&state.pool, tenant, query).await?;
    let endpoints: Vec<_> = hooks
        .data
        .iter()
        .map(|h| json!({ "id": h.id, "url": h.url }))
        .collect();
    let can_write = user.who.0.has(Permission::InboundWrite);
    let status = if form.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let (typed, error) = match form {
        Some((f, e)) => (Some(f), Some(e)),
        None => (None, None),
    };
    let body = render(
        "inbound.html",
        ctx! {
            layout => Layout::new(state, user, Some(tenant), "inbound").await,
            routes => routes.data, endpoints, messages, can_write, typed, error,
        },
    )?;
    Ok(html(status, body))
}

pub async fn list(
    user: ConsoleUser,
    state: web::Data<AppState>,
    q: web::Query<ListParams>,
) -> ConsoleResult<HttpResponse> {
    user.who.require(Permission::InboundRead)?;
    let Some(tenant) = tenant_for(&state, &user, q.tenant.as_deref()).await? else {
        return pick(&state, &user, "inbound").await;
    };
    render_list(&state, &user, tenant, blank(&q.cursor), None).await
}

pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Post<RouteForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require(Permission::InboundWrite)?;
    let tenant = tenant_for(&state, &user, f.tenant.as_deref())
        .await?
        .ok_or(AppError::NotFound)?;
    let action = blank(&f.action).unwrap_or_default();
    let webhook_id = blank(&f.webhook_id).filter(|_| action == "webhook");
    let body: AppResult<CreateRoute> = input(json!({
        "match": f.match_addr.clone().unwrap_or_default(),
        "action": action,
        "webhook_id": webhook_id,
        "format": blank(&f.format),
    }));
    let actor = user.actor(request_id(&req));
    let done = match body {
        Ok(body) => service::create_route(&state.pool, &actor, tenant, body)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match done {
        Ok(()) => Ok(see_other(&format!(
            "/console/inbound{}",
            tenant_q(&user, tenant)
        ))),
        Err(e) => match form_error(&e) {
            Some(why) => render_list(&state, &user, tenant, None, Some((f, why))).await,
            None => Err(e.into()),
        },
    }
}

#[derive(Deserialize)]
pub struct TenantForm {
    pub tenant: Option<String>,
}

pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    post: Post<TenantForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require(Permission::InboundWrite)?;
    let tenant = tenant_for(&state, &user, f.tenant.as_deref())
        .await?
        .ok_or(AppError::NotFound)?;
    let actor = user.actor(request_id(&req));
    service::delete_route(&state.pool, &actor, tenant, &path).await?;
    Ok(see_other(&format!(
        "/console/inbound{}",
        tenant_q(&user, tenant)
    )))
}

/// One received message; another tenant's id is the not-found page.
pub async fn show(
    user: ConsoleUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: web::Query<TenantQuery>,
) -> ConsoleResult<HttpResponse> {
    user.who.require(Permission::InboundRead)?;
    let tenant = tenant_for(&state, &user, q.tenant.as_deref())
        .await?
        .ok_or(AppError::NotFound)?;
    let message = service::get(&state.pool, tenant, &path).await?;
    let body = render(
        "inbound_message.html",
        ctx! {
            layout => Layout::new(&state, &user, Some(tenant), "inbound").await,
            message,
        },
    )?;
    Ok(html(StatusCode::OK, body))
}

/// One attachment, downloaded through the session (never shown inline).
pub async fn attachment(
    user: ConsoleUser,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    q: web::Query<TenantQuery>,
) -> ConsoleResult<HttpResponse> {
    user.who.require(Permission::InboundRead)?;
    let tenant = tenant_for(&state, &user, q.tenant.as_deref())
        .await?
        .ok_or(AppError::NotFound)?;
    let (id, index) = path.into_inner();
    let (meta, bytes) = service::attachment(&state.pool, tenant, &id, &index).await?;
    let name: String = meta
        .filename
        .as_deref()
        .unwrap_or("attachment")
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    let kind = header::HeaderValue::from_str(&meta.content_type)
        .unwrap_or(header::HeaderValue::from_static("application/octet-stream"));
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, kind))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(crate::console::render::csp())
        .body(bytes))
}
