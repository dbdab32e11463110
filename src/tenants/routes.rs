//! `/v1/tenants` handlers: extract, check the permission, call the service.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::input::{CreateTenant, UpdateTenant};
use super::model::TenantRef;
use super::service;
use super::view::TenantView;
use crate::audit::Actor;
use crate::auth::Principal;
use crate::body::JsonBody;
use crate::db::pagination::{Page, PageQuery};
use crate::domain::Permission;
use crate::error::{AppResult, Problem};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::GET,
            "/v1/tenants",
            Access::Admin(Permission::TenantsRead),
            || web::route().to(list),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/tenants",
            Access::Admin(Permission::TenantsWrite),
            || web::route().to(create),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/tenants/{tenant}",
            Access::Admin(Permission::TenantsRead),
            || web::route().to(get),
        ),
        Endpoint::new(
            Method::PUT,
            "/v1/tenants/{tenant}",
            Access::Admin(Permission::TenantsWrite),
            || web::route().to(put),
        ),
        Endpoint::new(
            Method::PATCH,
            "/v1/tenants/{tenant}",
            Access::Admin(Permission::TenantsWrite),
            || web::route().to(patch),
        ),
        Endpoint::new(
            Method::DELETE,
            "/v1/tenants/{tenant}",
            Access::Admin(Permission::TenantsWrite),
            || web::route().to(delete),
        ),
    ]
}

/// Create a tenant.
#[utoipa::path(post, path = "/v1/tenants", tag = "Tenants", request_body = CreateTenant,
    responses((status = 201, body = TenantView), (status = "4XX", body = Problem)),
    security(("bearer" = ["tenants:write"])))]
pub async fn create(
    who: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::TenantsWrite)?;
    let input: CreateTenant = body.parse().await?;
    let tenant = service::create(&state, &Actor::of(&who, &req), input).await?;
    Ok(HttpResponse::Created().json(tenant))
}

/// List tenants, newest first.
#[utoipa::path(get, path = "/v1/tenants", tag = "Tenants", params(PageQuery),
    responses((status = 200, body = Page<TenantView>), (status = "4XX", body = Problem)),
    security(("bearer" = ["tenants:read"])))]
pub async fn list(
    who: Principal,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::TenantsRead)?;
    let page = service::list(&state, query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Get a tenant by id or `external_id`.
#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "Tenants",
    params(("tenant" = String, Path, description = "Tenant id or external_id")),
    responses((status = 200, body = TenantView), (status = "4XX", body = Problem)),
    security(("bearer" = ["tenants:read"])))]
pub async fn get(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::TenantsRead)?;
    let tenant = service::get(&state, TenantRef::parse(&path)).await?;
    Ok(HttpResponse::Ok().json(tenant))
}

async fn update(
    who: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::TenantsWrite)?;
    let input: UpdateTenant = body.parse().await?;
    let actor = Actor::of(&who, &req);
    let tenant = service::update(&state, &actor, TenantRef::parse(&path), input).await?;
    Ok(HttpResponse::Ok().json(tenant))
}

/// Update a tenant: only the given fields change (`"smtp": null` removes the override).
#[utoipa::path(put, path = "/v1/tenants/{tenant}", tag = "Tenants", request_body = UpdateTenant,
    params(("tenant" = String, Path, description = "Tenant id or external_id")),
    responses((status = 200, body = TenantView), (status = "4XX", body = Problem)),
    security(("bearer" = ["tenants:write"])))]
pub async fn put(
    who: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    update(who, req, state, path, body).await
}

/// Update a tenant (same as PUT: a partial update).
#[utoipa::path(patch, path = "/v1/tenants/{tenant}", tag = "Tenants", request_body = UpdateTenant,
    params(("tenant" = String, Path, description = "Tenant id or external_id")),
    responses((status = 200, body = TenantView), (status = "4XX", body = Problem)),
    security(("bearer" = ["tenants:write"])))]
pub async fn patch(
    who: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    update(who, req, state, path, body).await
}

/// Delete a tenant: keys revoked, queued mail canceled, usage kept.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}", tag = "Tenants",
    params(("tenant" = String, Path, description = "Tenant id or external_id")),
    responses((status = 204), (status = "4XX", body = Problem)),
    security(("bearer" = ["tenants:write"])))]
pub async fn delete(
    who: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::TenantsWrite)?;
    service::delete(&state, &Actor::of(&who, &req), TenantRef::parse(&path)).await?;
    Ok(HttpResponse::NoContent().finish())
}
