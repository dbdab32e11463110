//! Usage routes: per tenant (admin) and the billing listing.

use actix_web::http::Method;
use actix_web::{web, HttpResponse};

use super::service::{self, PeriodQuery, StreamUsageView, UsageQuery, UsageView};
use crate::auth::Principal;
use crate::db::pagination::Page;
use crate::domain::Permission;
use crate::error::{AppResult, Problem};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;
use crate::tenants::model::TenantRef;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::GET,
            "/v1/tenants/{tenant}/usage",
            Access::Admin(Permission::UsageRead),
            || web::route().to(for_tenant),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/usage",
            Access::Any(Permission::UsageRead),
            || web::route().to(list),
        ),
    ]
}

/// What one tenant's usage is (the document only).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum TenantUsage {
    /// Every stream (no `stream` parameter).
    All(UsageView),
    /// One stream's messages (`stream=`).
    Stream(StreamUsageView),
}

/// One tenant's usage for a period (deleted tenants included), of every stream or one.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/usage", tag = "Usage",
    params(("tenant" = String, Path, description = "Tenant id or external_id"), PeriodQuery),
    responses((status = 200, body = TenantUsage), (status = "4XX", body = Problem)),
    security(("bearer" = ["usage:read"])))]
pub async fn for_tenant(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<PeriodQuery>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::UsageRead)?;
    let usage = service::report(&state, TenantRef::parse(&path), &query).await?;
    Ok(HttpResponse::Ok().json(usage))
}

/// What `GET /v1/usage` answers, by the key (the document only: the
/// service builds the JSON).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum UsageListing {
    /// Admin keys: every tenant's usage, a page.
    Page(Page<UsageView>),
    /// Tenant keys: their own tenant's usage.
    Own(UsageView),
    /// Admin keys with `stream=`: a page of every tenant's usage of that stream.
    StreamPage(Page<StreamUsageView>),
    /// Tenant keys with `stream=`: their own usage of that stream.
    OwnStream(StreamUsageView),
}

/// Admin keys: a page of every tenant's usage (billing). Tenant keys: their own usage object.
#[utoipa::path(get, path = "/v1/usage", tag = "Usage", params(UsageQuery),
    responses((status = 200, description = "A page of usage (admin) or one usage object (tenant key)", body = UsageListing),
              (status = "4XX", body = Problem)),
    security(("bearer" = ["usage:read"])))]
pub async fn list(
    who: Principal,
    state: web::Data<AppState>,
    query: web::Query<UsageQuery>,
) -> AppResult<HttpResponse> {
    let body = service::list(&state, &who, query.into_inner()).await?;
    Ok(HttpResponse::Ok().json(body))
}
