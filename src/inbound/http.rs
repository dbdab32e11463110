//! The HTTP side (thin): `/v1/inbound/routes[/{id}]` (`inbound:write` to
//! change, `inbound:read` to read) and the received mail, `/v1/inbound`,
//! `/v1/inbound/{id}`, `/raw` and `/attachments/{index}` (`inbound:read`).
//! Tenant keys only; another tenant's ids are 404 like missing ones.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::parse::AttachmentMeta;
use super::service::{self, CreateRoute, ListQuery};
use super::view::{ReceivedView, RouteView};
use crate::audit::Actor;
use crate::auth::Principal;
use crate::body::JsonBody;
use crate::db::pagination::{Page, PageQuery};
use crate::domain::{Permission, TenantId};
use crate::error::{AppResult, Problem};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;
use crate::tenants::scope::{self, ScopedPath};

pub fn endpoints() -> Vec<Endpoint> {
    let (r, w) = (Permission::InboundRead, Permission::InboundWrite);
    vec![
        Endpoint::new(Method::GET, "/v1/inbound/routes", Access::Tenant(r), || {
            web::route().to(list_routes)
        }),
        Endpoint::new(
            Method::POST,
            "/v1/inbound/routes",
            Access::Tenant(w),
            || web::route().to(create_route),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/inbound/routes/{id}",
            Access::Tenant(r),
            || web::route().to(get_route),
        ),
        Endpoint::new(
            Method::DELETE,
            "/v1/inbound/routes/{id}",
            Access::Tenant(w),
            || web::route().to(delete_route),
        ),
        Endpoint::new(Method::GET, "/v1/inbound", Access::Tenant(r), || {
            web::route().to(list)
        }),
        Endpoint::new(Method::GET, "/v1/inbound/{id}", Access::Tenant(r), || {
            web::route().to(get)
        }),
        Endpoint::new(
            Method::GET,
            "/v1/inbound/{id}/raw",
            Access::Tenant(r),
            || web::route().to(raw),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/inbound/{id}/attachments/{index}",
            Access::Tenant(r),
            || web::route().to(attachment),
        ),
    ]
}

async fn tenant(state: &AppState, who: &Principal, p: Permission) -> AppResult<TenantId> {
    let path = ScopedPath {
        tenant: None,
        id: None,
    };
    scope::resolve(state, who, &path, p, "inbound").await
}

#[derive(Debug, Deserialize)]
pub struct IdPath {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub struct AttachmentPath {
    pub id: String,
    pub index: String,
}

/// Create a route: where mail for an address (or `*@domain`) goes.
#[utoipa::path(post, path = "/v1/inbound/routes", tag = "Inbound", request_body = CreateRoute,
    responses((status = 201, body = RouteView), (status = "4XX", body = Problem)),
    security(("bearer" = ["inbound:write"])))]
pub async fn create_route(
    req: HttpRequest,
    who: Principal,
    state: web::Data<AppState>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    let t = tenant(&state, &who, Permission::InboundWrite).await?;
    let input: CreateRoute = body.parse().await?;
    let view = service::create_route(&state.pool, &Actor::of(&who, &req), t, input).await?;
    Ok(HttpResponse::Created().json(view))
}

/// List the routes, newest first.
#[utoipa::path(get, path = "/v1/inbound/routes", tag = "Inbound", params(PageQuery),
    responses((status = 200, body = Page<RouteView>), (status = "4XX", body = Problem)),
    security(("bearer" = ["inbound:read"])))]
pub async fn list_routes(
    who: Principal,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    let t = tenant(&state, &who, Permission::InboundRead).await?;
    let page = query.validate()?;
    Ok(HttpResponse::Ok().json(service::list_routes(&state.pool, t, page).await?))
}

/// One route.
#[utoipa::path(get, path = "/v1/inbound/routes/{id}", tag = "Inbound", params(("id" = String, Path, description = "The route's id")),
    responses((status = 200, body = RouteView), (status = "4XX", body = Problem)),
    security(("bearer" = ["inbound:read"])))]
pub async fn get_route(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
) -> AppResult<HttpResponse> {
    let t = tenant(&state, &who, Permission::InboundRead).await?;
    Ok(HttpResponse::Ok().json(service::get_route(&state.pool, t, &path.id).await?))
}

/// Delete a route: its addresses are refused (550) again.
#[utoipa::path(delete, path = "/v1/inbound/routes/{id}", tag = "Inbound", params(("id" = String, Path, description = "The route's id")),
    responses((status = 204), (status = "4XX", body = Problem)),
    security(("bearer" = ["inbound:write"])))]
pub async fn delete_route(
    req: HttpRequest,
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
) -> AppResult<HttpResponse> {
    let t = tenant(&state, &who, Permission::InboundWrite).await?;
    service::delete_route(&state.pool, &Actor::of(&who, &req), t, &path.id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Received messages, newest first.
#[utoipa::path(get, path = "/v1/inbound", tag = "Inbound", params(ListQuery),
    responses((status = 200, body = Page<ReceivedView>), (status = "4XX", body = Problem)),
    security(("bearer" = ["inbound:read"])))]
pub async fn list(
    who: Principal,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> AppResult<HttpResponse> {
    let t = tenant(&state, &who, Permission::InboundRead).await?;
    Ok(HttpResponse::Ok().json(service::list(&state.pool, t, query.into_inner()).await?))
}

/// One received message.
#[utoipa::path(get, path = "/v1/inbound/{id}", tag = "Inbound", params(("id" = String, Path, description = "The received message's id")),
    responses((status = 200, body = ReceivedView), (status = "4XX", body = Problem)),
    security(("bearer" = ["inbound:read"])))]
pub async fn get(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
) -> AppResult<HttpResponse> {
    let t = tenant(&state, &who, Permission::InboundRead).await?;
    Ok(HttpResponse::Ok().json(service::get(&state.pool, t, &path.id).await?))
}

/// The message as received (`message/rfc822`); 409 `content_purged` after retention.
#[utoipa::path(get, path = "/v1/inbound/{id}/raw", tag = "Inbound", params(("id" = String, Path, description = "The received message's id")),
    responses((status = 200, content_type = "message/rfc822", body = String), (status = "4XX", body = Problem)),
    security(("bearer" = ["inbound:read"])))]
pub async fn raw(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
) -> AppResult<HttpResponse> {
    let t = tenant(&state, &who, Permission::InboundRead).await?;
    let raw = service::raw(&state.pool, t, &path.id).await?;
    Ok(HttpResponse::Ok().content_type("message/rfc822").body(raw))
}

/// One attachment (index as in `attachments[]`), decoded, with its content type.
#[utoipa::path(get, path = "/v1/inbound/{id}/attachments/{index}", tag = "Inbound",
    params(("id" = String, Path, description = "The received message's id"), ("index" = String, Path, description = "The attachment's index in attachments[]")),
    responses((status = 200, content_type = "application/octet-stream", body = String), (status = "4XX", body = Problem)),
    security(("bearer" = ["inbound:read"])))]
pub async fn attachment(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<AttachmentPath>,
) -> AppResult<HttpResponse> {
    let t = tenant(&state, &who, Permission::InboundRead).await?;
    let (meta, bytes): (AttachmentMeta, Vec<u8>) =
        service::attachment(&state.pool, t, &path.id, &path.index).await?;
    let mut resp = HttpResponse::Ok();
    resp.content_type(meta.content_type.as_str());
    if let Some(name) = meta.filename.as_deref() {
        let safe: String = name
            .chars()
            .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
            .collect();
        resp.insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{safe}\""),
        ));
    }
    Ok(resp.body(bytes))
}
