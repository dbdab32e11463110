//! Key management routes (admin keys only).

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::service::{self, CreateKey, KeyView};
use crate::audit::Actor;
use crate::auth::Principal;
use crate::body::JsonBody;
use crate::db::pagination::{Page, PageQuery};
use crate::domain::Permission;
use crate::error::{AppResult, Problem};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;
use crate::tenants::model::TenantRef;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::GET,
            "/v1/tenants/{tenant}/api-keys",
            Access::Admin(Permission::KeysWrite),
            || web::route().to(list_tenant_keys),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/tenants/{tenant}/api-keys",
            Access::Admin(Permission::KeysWrite),
            || web::route().to(create_tenant_key),
        ),
        Endpoint::new(
            Method::DELETE,
            "/v1/tenants/{tenant}/api-keys/{key}",
            Access::Admin(Permission::KeysWrite),
            || web::route().to(revoke_tenant_key),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/admin-keys",
            Access::Admin(Permission::KeysWrite),
            || web::route().to(list_admin_keys),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/admin-keys",
            Access::Admin(Permission::KeysWrite),
            || web::route().to(create_admin_key),
        ),
        Endpoint::new(
            Method::DELETE,
            "/v1/admin-keys/{key}",
            Access::Admin(Permission::KeysWrite),
            || web::route().to(revoke_admin_key),
        ),
    ]
}

/// Create a tenant key; `key` is shown in this response only.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/api-keys", tag = "API keys", request_body = CreateKey,
    params(("tenant" = String, Path, description = "Tenant id or external_id")),
    responses((status = 201, body = KeyView), (status = "4XX", body = Problem)),
    security(("bearer" = ["keys:write"])))]
pub async fn create_tenant_key(
    who: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let input: CreateKey = body.parse().await?;
    let key = service::create_tenant_key(
        &state,
        &who,
        &Actor::of(&who, &req),
        TenantRef::parse(&path),
        input,
    )
    .await?;
    Ok(HttpResponse::Created().json(key))
}

/// List a tenant's keys (never their secrets).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/api-keys", tag = "API keys",
    params(("tenant" = String, Path, description = "Tenant id or external_id"), PageQuery),
    responses((status = 200, body = Page<KeyView>), (status = "4XX", body = Problem)),
    security(("bearer" = ["keys:write"])))]
pub async fn list_tenant_keys(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let page = service::list(&state, Some(TenantRef::parse(&path)), query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Revoke a tenant key; it stops working at once.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/api-keys/{key}", tag = "API keys",
    params(("tenant" = String, Path, description = "Tenant id or external_id"), ("key" = Uuid, Path, description = "Key id")),
    responses((status = 204), (status = "4XX", body = Problem)),
    security(("bearer" = ["keys:write"])))]
pub async fn revoke_tenant_key(
    who: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let (tenant, key) = path.into_inner();
    service::revoke(
        &state,
        &Actor::of(&who, &req),
        Some(TenantRef::parse(&tenant)),
        &key,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Create an admin key (never with more permissions than the caller's).
#[utoipa::path(post, path = "/v1/admin-keys", tag = "API keys", request_body = CreateKey,
    responses((status = 201, body = KeyView), (status = "4XX", body = Problem)),
    security(("bearer" = ["keys:write"])))]
pub async fn create_admin_key(
    who: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let input: CreateKey = body.parse().await?;
    let key = service::create_admin_key(&state, &who, &Actor::of(&who, &req), input).await?;
    Ok(HttpResponse::Created().json(key))
}

/// List admin keys.
#[utoipa::path(get, path = "/v1/admin-keys", tag = "API keys", params(PageQuery),
    responses((status = 200, body = Page<KeyView>), (status = "4XX", body = Problem)),
    security(("bearer" = ["keys:write"])))]
pub async fn list_admin_keys(
    who: Principal,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let page = service::list(&state, None, query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Revoke an admin key.
#[utoipa::path(delete, path = "/v1/admin-keys/{key}", tag = "API keys",
    params(("key" = Uuid, Path, description = "Key id")),
    responses((status = 204), (status = "4XX", body = Problem)),
    security(("bearer" = ["keys:write"])))]
pub async fn revoke_admin_key(
    who: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    service::revoke(&state, &Actor::of(&who, &req), None, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}
