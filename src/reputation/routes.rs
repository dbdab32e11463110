//! Reputation handlers: extract, check the permission, call the service.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::service;
use super::view::ReputationView;
use crate::audit::Actor;
use crate::auth::Principal;
use crate::body::JsonBody;
use crate::db::pagination::{Page, PageQuery};
use crate::domain::Permission;
use crate::error::{AppError, AppResult, Problem};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;
use crate::tenants::model::TenantRef;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::GET,
            "/v1/reputation",
            Access::Tenant(Permission::UsageRead),
            || web::route().to(own),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/tenants/{tenant}/reputation",
            Access::Admin(Permission::TenantsRead),
            || web::route().to(for_tenant),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/admin/reputation",
            Access::Admin(Permission::TenantsRead),
            || web::route().to(list),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/tenants/{tenant}/reinstate",
            Access::Admin(Permission::TenantsWrite),
            || web::route().to(reinstate),
        ),
    ]
}

/// The calling tenant's reputation: status, figures, policy.
#[utoipa::path(get, path = "/v1/reputation", tag = "Reputation",
    responses((status = 200, body = ReputationView), (status = "4XX", body = Problem)),
    security(("bearer" = ["usage:read"])))]
pub async fn own(who: Principal, state: web::Data<AppState>) -> AppResult<HttpResponse> {
    who.require(Permission::UsageRead)?;
    let tenant = who.tenant().ok_or_else(|| {
        AppError::forbidden("tenant_key_required", "This route needs a tenant key.")
    })?;
    Ok(HttpResponse::Ok().json(service::get(&state, tenant).await?))
}

/// A tenant's reputation (admin keys).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/reputation", tag = "Reputation",
    params(("tenant" = String, Path, description = "Tenant id or external_id")),
    responses((status = 200, body = ReputationView), (status = "4XX", body = Problem)),
    security(("bearer" = ["tenants:read"])))]
pub async fn for_tenant(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::TenantsRead)?;
    let row = state.tenants.get(&TenantRef::parse(&path)).await?;
    Ok(HttpResponse::Ok().json(service::get(&state, row.tenant_id()).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `warning` or `paused`; both when absent.
    pub status: Option<String>,
    /// 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// next_cursor of the previous page.
    pub cursor: Option<String>,
}

/// Tenants in warning or paused, worst complaint rate first (admin keys).
#[utoipa::path(get, path = "/v1/admin/reputation", tag = "Reputation", params(ListQuery),
    responses((status = 200, body = Page<ReputationView>), (status = "4XX", body = Problem)),
    security(("bearer" = ["tenants:read"])))]
pub async fn list(
    who: Principal,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::TenantsRead)?;
    let q = query.into_inner();
    let status = match q.status.as_deref() {
        None => None,
        Some(s @ ("warning" | "paused")) => Some(s.to_string()),
        Some(_) => return Err(AppError::invalid("status", "must be warning or paused")),
    };
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .validate()?;
    Ok(HttpResponse::Ok().json(service::list(&state, status, page).await?))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReinstateBody {
    /// Kept in the audit entry (at most 1000 characters).
    pub note: Option<String>,
}

/// The most characters a reinstatement note keeps.
pub const MAX_NOTE: usize = 1000;

/// Reinstate a paused (or warned) tenant: held mail resumes and the figures
/// count from now (admin keys).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/reinstate", tag = "Reputation",
    request_body(content = ReinstateBody, description = "Optional: a POST without a body is `{}`."),
    params(("tenant" = String, Path, description = "Tenant id or external_id")),
    responses((status = 200, body = ReputationView), (status = "4XX", body = Problem)),
    security(("bearer" = ["tenants:write"])))]
pub async fn reinstate(
    who: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::TenantsWrite)?;
    // The body is optional: a POST without one (no Content-Type, no
    // length, not chunked) is `{}`; any body is held to the JSON rules.
    let headers = req.headers();
    let has_body = headers.contains_key(actix_web::http::header::CONTENT_TYPE)
        || headers.contains_key(actix_web::http::header::TRANSFER_ENCODING)
        || headers
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let input: ReinstateBody = if has_body {
        body.parse().await?
    } else {
        ReinstateBody::default()
    };
    if input
        .note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE)
    {
        return Err(AppError::invalid(
            "note",
            format!("must be at most {MAX_NOTE} characters"),
        ));
    }
    let row = state.tenants.get(&TenantRef::parse(&path)).await?;
    let actor = Actor::of(&who, &req);
    let view = service::reinstate(&state, &actor, row.tenant_id(), input.note).await?;
    Ok(HttpResponse::Ok().json(view))
}
