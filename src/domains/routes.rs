//! Domain routes: `/v1/domains` for tenant keys and
//! `/v1/tenants/{tenant}/domains` for admin keys (same handlers; the path
//! decides the tenant). `{id}` is the domain's id or its name.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::input::CreateDomain;
use super::model::DomainRef;
use super::service;
use super::view::DomainView;
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
    let mut out = Vec::new();
    for (list, one, verify_path, rotate_path, tenant_form) in [
        (
            "/v1/domains",
            "/v1/domains/{id}",
            "/v1/domains/{id}/verify",
            "/v1/domains/{id}/dkim/rotate",
            true,
        ),
        (
            "/v1/tenants/{tenant}/domains",
            "/v1/tenants/{tenant}/domains/{id}",
            "/v1/tenants/{tenant}/domains/{id}/verify",
            "/v1/tenants/{tenant}/domains/{id}/dkim/rotate",
            false,
        ),
    ] {
        let access = |p: Permission| {
            if tenant_form {
                Access::Tenant(p)
            } else {
                Access::Admin(p)
            }
        };
        let (read, write) = (
            access(Permission::DomainsRead),
            access(Permission::DomainsWrite),
        );
        out.push(Endpoint::new(Method::GET, list, read, || {
            web::route().to(list_domains)
        }));
        out.push(Endpoint::new(Method::POST, list, write, || {
            web::route().to(create)
        }));
        out.push(Endpoint::new(Method::GET, one, read, || {
            web::route().to(get)
        }));
        out.push(Endpoint::new(Method::DELETE, one, write, || {
            web::route().to(delete)
        }));
        out.push(Endpoint::new(Method::POST, verify_path, write, || {
            web::route().to(verify)
        }));
        out.push(Endpoint::new(Method::POST, rotate_path, write, || {
            web::route().to(rotate)
        }));
    }
    out
}

const SCOPE: scope::Capability = scope::Capability {
    name: "domains",
    read: Permission::DomainsRead,
    write: Permission::DomainsWrite,
};

/// Add a sending domain; its DKIM keys are generated (private keys never leave the server).
#[utoipa::path(post, path = "/v1/domains", tag = "Domains", request_body = CreateDomain,
    responses((status = 201, body = DomainView), (status = "4XX", body = Problem)),
    security(("bearer" = ["domains:write"])))]
pub async fn create(
    req: HttpRequest,
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, true).await?;
    let input: CreateDomain = body.parse().await?;
    let view = service::create(&state.domains, &Actor::of(&who, &req), t, input).await?;
    Ok(HttpResponse::Created().json(view))
}

/// List the tenant's domains.
#[utoipa::path(get, path = "/v1/domains", tag = "Domains", params(PageQuery),
    responses((status = 200, body = Page<DomainView>), (status = "4XX", body = Problem)),
    security(("bearer" = ["domains:read"])))]
pub async fn list_domains(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, false).await?;
    let page = service::list(&state.domains, t, query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Get a domain by id or name, with its records and their last check.
#[utoipa::path(get, path = "/v1/domains/{id}", tag = "Domains", params(("id" = String, Path, description = "Domain id or name")),
    responses((status = 200, body = DomainView), (status = "4XX", body = Problem)),
    security(("bearer" = ["domains:read"])))]
pub async fn get(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, false).await?;
    let view = service::get(&state.domains, t, DomainRef::parse(path.id()?)).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Delete a domain: mail from it is refused from then on.
#[utoipa::path(delete, path = "/v1/domains/{id}", tag = "Domains", params(("id" = String, Path, description = "Domain id or name")),
    responses((status = 204), (status = "4XX", body = Problem)),
    security(("bearer" = ["domains:write"])))]
pub async fn delete(
    req: HttpRequest,
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, true).await?;
    service::delete(
        &state.domains,
        &Actor::of(&who, &req),
        t,
        DomainRef::parse(path.id()?),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Check the domain's DNS records now (409 `domain_taken` when another tenant verified it first).
#[utoipa::path(post, path = "/v1/domains/{id}/verify", tag = "Domains", params(("id" = String, Path, description = "Domain id or name")),
    responses((status = 200, body = DomainView), (status = "4XX", body = Problem), (status = 503, body = Problem)),
    security(("bearer" = ["domains:write"])))]
pub async fn verify(
    req: HttpRequest,
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, true).await?;
    let view = service::verify(
        &state.domains,
        &Actor::of(&who, &req),
        t,
        DomainRef::parse(path.id()?),
    )
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Rotate the DKIM keys: new selectors, pending until their records are seen.
#[utoipa::path(post, path = "/v1/domains/{id}/dkim/rotate", tag = "Domains", params(("id" = String, Path, description = "Domain id or name")),
    responses((status = 200, body = DomainView), (status = "4XX", body = Problem)),
    security(("bearer" = ["domains:write"])))]
pub async fn rotate(
    req: HttpRequest,
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let t = scope::resolve_for(&state, &who, &path, &SCOPE, true).await?;
    let view = service::rotate(
        &state.domains,
        &Actor::of(&who, &req),
        t,
        DomainRef::parse(path.id()?),
    )
    .await?;
    Ok(HttpResponse::Ok().json(view))
}
