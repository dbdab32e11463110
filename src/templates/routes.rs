//! Template routes: `/v1/templates` for tenant keys and
//! `/v1/tenants/{tenant}/templates` for admin keys (same handlers; the path
//! decides the tenant).

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::input::{CreateTemplate, RenderRequest, UpdateTemplate};
use super::model::TemplateRef;
use super::render::Rendered;
use super::service;
use super::view::TemplateView;
use crate::audit::Actor;
use crate::auth::Principal;
use crate::body::JsonBody;
use crate::db::pagination::{Page, PageQuery};
use crate::domain::Permission;
use crate::error::{AppResult, Problem};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;
use crate::tenants::scope::{self, ScopedPath};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::GET,
            "/v1/templates",
            Access::Tenant(Permission::TemplatesRead),
            || web::route().to(list),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/templates",
            Access::Tenant(Permission::TemplatesWrite),
            || web::route().to(create),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/templates/{id}",
            Access::Tenant(Permission::TemplatesRead),
            || web::route().to(get),
        ),
        Endpoint::new(
            Method::PUT,
            "/v1/templates/{id}",
            Access::Tenant(Permission::TemplatesWrite),
            || web::route().to(update),
        ),
        Endpoint::new(
            Method::PATCH,
            "/v1/templates/{id}",
            Access::Tenant(Permission::TemplatesWrite),
            || web::route().to(update),
        ),
        Endpoint::new(
            Method::DELETE,
            "/v1/templates/{id}",
            Access::Tenant(Permission::TemplatesWrite),
            || web::route().to(delete),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/templates/{id}/render",
            Access::Tenant(Permission::TemplatesRead),
            || web::route().to(render),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/tenants/{tenant}/templates",
            Access::Admin(Permission::TemplatesRead),
            || web::route().to(list),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/tenants/{tenant}/templates",
            Access::Admin(Permission::TemplatesWrite),
            || web::route().to(create),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/tenants/{tenant}/templates/{id}",
            Access::Admin(Permission::TemplatesRead),
            || web::route().to(get),
        ),
        Endpoint::new(
            Method::PUT,
            "/v1/tenants/{tenant}/templates/{id}",
            Access::Admin(Permission::TemplatesWrite),
            || web::route().to(update),
        ),
        Endpoint::new(
            Method::PATCH,
            "/v1/tenants/{tenant}/templates/{id}",
            Access::Admin(Permission::TemplatesWrite),
            || web::route().to(update),
        ),
        Endpoint::new(
            Method::DELETE,
            "/v1/tenants/{tenant}/templates/{id}",
            Access::Admin(Permission::TemplatesWrite),
            || web::route().to(delete),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/tenants/{tenant}/templates/{id}/render",
            Access::Admin(Permission::TemplatesRead),
            || web::route().to(render),
        ),
    ]
}

const SCOPE: scope::Capability = scope::Capability {
    name: "templates",
    read: Permission::TemplatesRead,
    write: Permission::TemplatesWrite,
};

/// Create a template (name unique per tenant).
#[utoipa::path(post, path = "/v1/templates", tag = "Templates", request_body = CreateTemplate,
    responses((status = 201, body = TemplateView), (status = "4XX", body = Problem)),
    security(("bearer" = ["templates:write"])))]
pub async fn create(
    req: HttpRequest,
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, true).await?;
    let input: CreateTemplate = body.parse().await?;
    let view = service::create(&state, &Actor::of(&who, &req), t, input).await?;
    Ok(HttpResponse::Created().json(view))
}

/// List templates.
#[utoipa::path(get, path = "/v1/templates", tag = "Templates", params(PageQuery),
    responses((status = 200, body = Page<TemplateView>), (status = "4XX", body = Problem)),
    security(("bearer" = ["templates:read"])))]
pub async fn list(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, false).await?;
    let page = service::list(&state, t, query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Get a template by id or name.
#[utoipa::path(get, path = "/v1/templates/{id}", tag = "Templates", params(("id" = String, Path, description = "Template id or name")),
    responses((status = 200, body = TemplateView), (status = "4XX", body = Problem)),
    security(("bearer" = ["templates:read"])))]
pub async fn get(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, false).await?;
    let view = service::get(&state, t, TemplateRef::parse(path.id()?)).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Update a template: only the given fields change (PUT and PATCH alike).
#[utoipa::path(put, path = "/v1/templates/{id}", tag = "Templates", request_body = UpdateTemplate, params(("id" = String, Path, description = "Template id or name")),
    responses((status = 200, body = TemplateView), (status = "4XX", body = Problem)),
    security(("bearer" = ["templates:write"])))]
pub async fn update(
    req: HttpRequest,
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, true).await?;
    let input: UpdateTemplate = body.parse().await?;
    let view = service::update(
        &state,
        &Actor::of(&who, &req),
        t,
        TemplateRef::parse(path.id()?),
        input,
    )
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Delete a template.
#[utoipa::path(delete, path = "/v1/templates/{id}", tag = "Templates", params(("id" = String, Path, description = "Template id or name")),
    responses((status = 204), (status = "4XX", body = Problem)),
    security(("bearer" = ["templates:write"])))]
pub async fn delete(
    req: HttpRequest,
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, true).await?;
    service::delete(
        &state,
        &Actor::of(&who, &req),
        t,
        TemplateRef::parse(path.id()?),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Preview: render a template with variables (html autoescaped).
#[utoipa::path(post, path = "/v1/templates/{id}/render", tag = "Templates", request_body = RenderRequest, params(("id" = String, Path, description = "Template id or name")),
    responses((status = 200, body = Rendered), (status = "4XX", body = Problem)),
    security(("bearer" = ["templates:read"])))]
pub async fn render(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, false).await?;
    let r = TemplateRef::parse(path.id()?);
    let input: RenderRequest = body.parse().await?;
    let rendered = service::preview(&state, t, r, input).await?;
    Ok(HttpResponse::Ok().json(rendered))
}
