//! Send and read routes: tenant style (`/v1/emails`), admin on behalf of a
//! tenant (`/v1/tenants/{id}/emails`), and platform style (admin key with
//! `tenant_id` in the body or query).

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::input::{BatchRequest, SendRequest};
use super::schedule::{self, Reschedule};
use super::service::{self, ListQuery, Reply, TenantListQuery};
use super::view::{Accepted, BatchAccepted, EmailDetail, EmailSummary};
use crate::auth::Principal;
use crate::body::JsonBody;
use crate::db::pagination::Page;
use crate::domain::Permission;
use crate::error::{AppError, AppResult, Problem};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::POST,
            "/v1/emails",
            Access::Any(Permission::Send),
            || web::route().to(send),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/emails",
            Access::Any(Permission::EmailsRead),
            || web::route().to(list),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/emails/batch",
            Access::Any(Permission::Send),
            || web::route().to(send_batch),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/emails/{email}",
            Access::Any(Permission::EmailsRead),
            || web::route().to(get),
        ),
        Endpoint::new(
            Method::PATCH,
            "/v1/emails/{email}",
            Access::Any(Permission::Send),
            || web::route().to(reschedule),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/emails/{email}/cancel",
            Access::Any(Permission::Send),
            || web::route().to(cancel),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/tenants/{tenant}/emails",
            Access::Admin(Permission::Send),
            || web::route().to(send_for_tenant),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/tenants/{tenant}/emails",
            Access::Admin(Permission::EmailsRead),
            || web::route().to(list_for_tenant),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/tenants/{tenant}/emails/{email}",
            Access::Admin(Permission::EmailsRead),
            || web::route().to(get_for_tenant),
        ),
        Endpoint::new(
            Method::PATCH,
            "/v1/tenants/{tenant}/emails/{email}",
            Access::Admin(Permission::Send),
            || web::route().to(reschedule_for_tenant),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/tenants/{tenant}/emails/{email}/cancel",
            Access::Admin(Permission::Send),
            || web::route().to(cancel_for_tenant),
        ),
    ]
}

fn idempotency_key(req: &HttpRequest) -> AppResult<Option<String>> {
    match req.headers().get("Idempotency-Key") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| AppError::invalid("Idempotency-Key", "must be printable ASCII")),
    }
}

fn respond((status, body): Reply) -> HttpResponse {
    HttpResponse::build(status).json(body)
}

/// Send one message (tenant key; or admin key with `tenant_id` in the body).
#[utoipa::path(post, path = "/v1/emails", tag = "Emails", request_body = SendRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key + same body within 24 h replays the first response")),
    responses((status = 202, body = Accepted), (status = "4XX", body = Problem)),
    security(("bearer" = ["send"])))]
pub async fn send(
    who: Principal,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    who.require(Permission::Send)?;
    let body = body.bytes().await?;
    let reply = service::send_one(&state, &who, None, &body, idempotency_key(&req)?).await?;
    Ok(respond(reply))
}

/// Send one message on behalf of a tenant (admin key).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/emails", tag = "Emails", request_body = SendRequest,
    params(("tenant" = String, Path, description = "Tenant id or external_id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Same key + same body within 24 h replays the first response")),
    responses((status = 202, body = Accepted), (status = "4XX", body = Problem)),
    security(("bearer" = ["send"])))]
pub async fn send_for_tenant(
    who: Principal,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::Send)?;
    let body = body.bytes().await?;
    let reply = service::send_one(&state, &who, Some(&path), &body, idempotency_key(&req)?).await?;
    Ok(respond(reply))
}

/// Send up to 100 messages; all are validated before any is queued.
#[utoipa::path(post, path = "/v1/emails/batch", tag = "Emails", request_body = BatchRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key + same body within 24 h replays the first response")),
    responses((status = 202, body = BatchAccepted), (status = "4XX", body = Problem)),
    security(("bearer" = ["send"])))]
pub async fn send_batch(
    who: Principal,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    who.require(Permission::Send)?;
    let body = body.bytes().await?;
    let reply = service::send_batch(&state, &who, &body, idempotency_key(&req)?).await?;
    Ok(respond(reply))
}

/// List messages, newest first (admin keys: every tenant's, or `?tenant_id=`).
#[utoipa::path(get, path = "/v1/emails", tag = "Emails", params(ListQuery),
    responses((status = 200, body = Page<EmailSummary>), (status = "4XX", body = Problem)),
    security(("bearer" = ["emails:read"])))]
pub async fn list(
    who: Principal,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> AppResult<HttpResponse> {
    let page = service::list(&state, &who, None, query.into_inner()).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// List one tenant's messages (admin key).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/emails", tag = "Emails",
    params(("tenant" = String, Path, description = "Tenant id or external_id"), TenantListQuery),
    responses((status = 200, body = Page<EmailSummary>), (status = "4XX", body = Problem)),
    security(("bearer" = ["emails:read"])))]
pub async fn list_for_tenant(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<TenantListQuery>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::EmailsRead)?;
    let page = service::list(&state, &who, Some(&path), query.into_inner().into()).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// `?tenant_id=` for admin keys reading one message.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// Tenant id or external_id (admin keys only).
    tenant_id: Option<String>,
}

/// A message with its event timeline.
#[utoipa::path(get, path = "/v1/emails/{email}", tag = "Emails",
    params(("email" = Uuid, Path, description = "Message id"), TenantQuery),
    responses((status = 200, body = EmailDetail), (status = "4XX", body = Problem)),
    security(("bearer" = ["emails:read"])))]
pub async fn get(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<TenantQuery>,
) -> AppResult<HttpResponse> {
    let detail = service::get(&state, &who, None, query.tenant_id.as_deref(), &path).await?;
    Ok(HttpResponse::Ok().json(detail))
}

/// One tenant's message with its event timeline (admin key).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/emails/{email}", tag = "Emails",
    params(("tenant" = String, Path, description = "Tenant id or external_id"), ("email" = Uuid, Path, description = "Message id")),
    responses((status = 200, body = EmailDetail), (status = "4XX", body = Problem)),
    security(("bearer" = ["emails:read"])))]
pub async fn get_for_tenant(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::EmailsRead)?;
    let (tenant, email) = path.into_inner();
    let detail = service::get(&state, &who, Some(&tenant), None, &email).await?;
    Ok(HttpResponse::Ok().json(detail))
}

/// Move a scheduled message to another time (409 `email_not_reschedulable`
/// once its time has come or it was sent).
#[utoipa::path(patch, path = "/v1/emails/{email}", tag = "Emails", request_body = Reschedule,
    params(("email" = Uuid, Path, description = "Message id"), TenantQuery),
    responses((status = 200, body = EmailDetail), (status = "4XX", body = Problem)),
    security(("bearer" = ["send"])))]
pub async fn reschedule(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<TenantQuery>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    who.require(Permission::Send)?;
    let body: Reschedule = body.parse().await?;
    let q = query.tenant_id.as_deref();
    let detail = schedule::reschedule(&state, &who, None, q, &path, body).await?;
    Ok(HttpResponse::Ok().json(detail))
}

/// Reschedule one tenant's message (admin key).
#[utoipa::path(patch, path = "/v1/tenants/{tenant}/emails/{email}", tag = "Emails", request_body = Reschedule,
    params(("tenant" = String, Path, description = "Tenant id or external_id"), ("email" = Uuid, Path, description = "Message id")),
    responses((status = 200, body = EmailDetail), (status = "4XX", body = Problem)),
    security(("bearer" = ["send"])))]
pub async fn reschedule_for_tenant(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::Send)?;
    let body: Reschedule = body.parse().await?;
    let (tenant, email) = path.into_inner();
    let detail = schedule::reschedule(&state, &who, Some(&tenant), None, &email, body).await?;
    Ok(HttpResponse::Ok().json(detail))
}

/// Cancel a scheduled, queued, deferred or held message (409
/// `email_not_cancelable` otherwise, or while a worker is sending it).
#[utoipa::path(post, path = "/v1/emails/{email}/cancel", tag = "Emails",
    params(("email" = Uuid, Path, description = "Message id"), TenantQuery),
    responses((status = 200, body = EmailDetail), (status = "4XX", body = Problem)),
    security(("bearer" = ["send"])))]
pub async fn cancel(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<TenantQuery>,
) -> AppResult<HttpResponse> {
    let q = query.tenant_id.as_deref();
    let detail = schedule::cancel(&state, &who, None, q, &path).await?;
    Ok(HttpResponse::Ok().json(detail))
}

/// Cancel one tenant's message (admin key).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/emails/{email}/cancel", tag = "Emails",
    params(("tenant" = String, Path, description = "Tenant id or external_id"), ("email" = Uuid, Path, description = "Message id")),
    responses((status = 200, body = EmailDetail), (status = "4XX", body = Problem)),
    security(("bearer" = ["send"])))]
pub async fn cancel_for_tenant(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::Send)?;
    let (tenant, email) = path.into_inner();
    let detail = schedule::cancel(&state, &who, Some(&tenant), None, &email).await?;
    Ok(HttpResponse::Ok().json(detail))
}
