//! Suppression routes: `/v1/suppressions` for tenant keys and
//! `/v1/tenants/{tenant}/suppressions` for admin keys (same handlers).

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::service::{self, CreateSuppression, ListQuery, SuppressionView};
use crate::audit::Actor;
use crate::auth::Principal;
use crate::body::JsonBody;
use crate::db::pagination::Page;
use crate::domain::Permission;
use crate::error::{AppResult, Problem};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;
use crate::tenants::scope::{self, ScopedPath};

pub fn endpoints() -> Vec<Endpoint> {
    let (r, w) = (Permission::SuppressionsRead, Permission::SuppressionsWrite);
    vec![
        Endpoint::new(Method::GET, "/v1/suppressions", Access::Tenant(r), || {
            web::route().to(list)
        }),
        Endpoint::new(Method::POST, "/v1/suppressions", Access::Tenant(w), || {
            web::route().to(create)
        }),
        Endpoint::new(
            Method::GET,
            "/v1/suppressions/{id}",
            Access::Tenant(r),
            || web::route().to(get),
        ),
        Endpoint::new(
            Method::DELETE,
            "/v1/suppressions/{id}",
            Access::Tenant(w),
            || web::route().to(delete),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/tenants/{tenant}/suppressions",
            Access::Admin(r),
            || web::route().to(list),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/tenants/{tenant}/suppressions",
            Access::Admin(w),
            || web::route().to(create),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/tenants/{tenant}/suppressions/{id}",
            Access::Admin(r),
            || web::route().to(get),
        ),
        Endpoint::new(
            Method::DELETE,
            "/v1/tenants/{tenant}/suppressions/{id}",
            Access::Admin(w),
            || web::route().to(delete),
        ),
    ]
}

const SCOPE: scope::Capability = scope::Capability {
    name: "suppressions",
    read: Permission::SuppressionsRead,
    write: Permission::SuppressionsWrite,
};

/// List the suppression list (live entries, newest first).
#[utoipa::path(get, path = "/v1/suppressions", tag = "Suppressions", params(ListQuery),
    responses((status = 200, body = Page<SuppressionView>), (status = "4XX", body = Problem)),
    security(("bearer" = ["suppressions:read"])))]
pub async fn list(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
    query: web::Query<ListQuery>,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, false).await?;
    let page = service::list(&state, t, query.into_inner()).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Add an address by hand (`reason` manual; never expires).
#[utoipa::path(post, path = "/v1/suppressions", tag = "Suppressions", request_body = CreateSuppression,
    responses((status = 201, body = SuppressionView), (status = "4XX", body = Problem)),
    security(("bearer" = ["suppressions:write"])))]
pub async fn create(
    req: HttpRequest,
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, true).await?;
    let input: CreateSuppression = body.parse().await?;
    let view = service::create(&state, &Actor::of(&who, &req), t, input).await?;
    Ok(HttpResponse::Created().json(view))
}

/// One entry by address.
#[utoipa::path(get, path = "/v1/suppressions/{id}", tag = "Suppressions", params(("id" = String, Path, description = "The e-mail address")),
    responses((status = 200, body = SuppressionView), (status = "4XX", body = Problem)),
    security(("bearer" = ["suppressions:read"])))]
pub async fn get(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, false).await?;
    let view = service::get(&state, t, path.id()?).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Remove an address: mail to it is sent again.
#[utoipa::path(delete, path = "/v1/suppressions/{id}", tag = "Suppressions", params(("id" = String, Path, description = "The e-mail address")),
    responses((status = 204), (status = "4XX", body = Problem)),
    security(("bearer" = ["suppressions:write"])))]
pub async fn delete(
    req: HttpRequest,
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, true).await?;
    service::delete(&state, &Actor::of(&who, &req), t, path.id()?).await?;
    Ok(HttpResponse::NoContent().finish())
}
