//! Webhook routes. Tenant endpoints: `/v1/webhooks` (tenant keys) and
//! `/v1/tenants/{tenant}/webhooks` (admin keys); platform-wide endpoints:
//! `/v1/admin/webhooks` (admin keys). One set of handlers; the [`Realm`]
//! extractor says which owner a path means.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::input::{CreateWebhook, UpdateWebhook};
use super::model::Owner;
use super::service;
use super::view::{CreatedWebhook, DeliveryView, WebhookView};
use crate::audit::Actor;
use crate::auth::Principal;
use crate::body::JsonBody;
use crate::db::pagination::{Page, PageQuery};
use crate::domain::Permission;
use crate::error::{AppResult, Problem};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;
use crate::tenants::scope::{self, ScopedPath};

/// Which owner a path means: `/v1/admin/webhooks…` is platform-wide,
/// everything else belongs to one tenant.
#[derive(Clone, Copy, Debug)]
pub enum Realm {
    Tenant,
    Platform,
}

impl actix_web::FromRequest for Realm {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let platform = req
            .match_pattern()
            .is_some_and(|p| p.starts_with("/v1/admin/webhooks"));
        std::future::ready(Ok(if platform {
            Realm::Platform
        } else {
            Realm::Tenant
        }))
    }
}

/// Each route under the three prefixes, in this order: tenant keys
/// (`/v1/webhooks`), admin keys for a tenant (`/v1/tenants/{tenant}/webhooks`)
/// and admin keys for the platform's own endpoints (`/v1/admin/webhooks`).
macro_rules! in_every_realm {
    ($($method:ident $suffix:literal $perm:ident $handler:ident),* $(,)?) => {
        vec![
            $(Endpoint::new(Method::$method, concat!("/v1/webhooks", $suffix),
                Access::Tenant(Permission::$perm), || web::route().to($handler)),)*
            $(Endpoint::new(Method::$method, concat!("/v1/tenants/{tenant}/webhooks", $suffix),
                Access::Admin(Permission::$perm), || web::route().to($handler)),)*
            $(Endpoint::new(Method::$method, concat!("/v1/admin/webhooks", $suffix),
                Access::Admin(Permission::$perm), || web::route().to($handler)),)*
        ]
    };
}

pub fn endpoints() -> Vec<Endpoint> {
    in_every_realm![
        GET "" WebhooksRead list,
        POST "" WebhooksWrite create,
        GET "/{id}" WebhooksRead get,
        PUT "/{id}" WebhooksWrite update,
        PATCH "/{id}" WebhooksWrite update,
        DELETE "/{id}" WebhooksWrite delete,
        GET "/{id}/deliveries" WebhooksRead deliveries,
        POST "/{id}/test" WebhooksWrite test,
        POST "/{id}/deliveries/{delivery_id}/retry" WebhooksWrite retry,
    ]
}

/// Checks the permission (admin key for admin forms) before any lookup.
async fn owner(
    state: &AppState,
    who: &Principal,
    realm: Realm,
    path: &ScopedPath,
    write: bool,
) -> AppResult<Owner> {
    let p = if write {
        Permission::WebhooksWrite
    } else {
        Permission::WebhooksRead
    };
    match realm {
        Realm::Platform => {
            who.require_admin(p)?;
            Ok(Owner::Platform)
        }
        Realm::Tenant => Ok(Owner::Tenant(
            scope::resolve(state, who, path, p, "webhooks (or /v1/admin/webhooks)").await?,
        )),
    }
}

/// Create a webhook endpoint; `secret` (`whsec_…`) is shown in this response only.
#[utoipa::path(post, path = "/v1/webhooks", tag = "Webhooks", request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = "4XX", body = Problem)),
    security(("bearer" = ["webhooks:write"])))]
pub async fn create(
    who: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    realm: Realm,
    path: web::Path<ScopedPath>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    let o = owner(&state, &who, realm, &path, true).await?;
    let input: CreateWebhook = body.parse().await?;
    let created = service::create(&state, &Actor::of(&who, &req), o, input).await?;
    Ok(HttpResponse::Created().json(created))
}

/// List webhook endpoints.
#[utoipa::path(get, path = "/v1/webhooks", tag = "Webhooks", params(PageQuery),
    responses((status = 200, body = Page<WebhookView>), (status = "4XX", body = Problem)),
    security(("bearer" = ["webhooks:read"])))]
pub async fn list(
    who: Principal,
    state: web::Data<AppState>,
    realm: Realm,
    path: web::Path<ScopedPath>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    let o = owner(&state, &who, realm, &path, false).await?;
    let page = service::list(&state, o, query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Get a webhook endpoint (never its secret).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "Webhooks", params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookView), (status = "4XX", body = Problem)),
    security(("bearer" = ["webhooks:read"])))]
pub async fn get(
    who: Principal,
    state: web::Data<AppState>,
    realm: Realm,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let o = owner(&state, &who, realm, &path, false).await?;
    let view = service::get(&state, o, path.id()?).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Update a webhook endpoint: only the given fields change (PUT and PATCH alike).
#[utoipa::path(put, path = "/v1/webhooks/{id}", tag = "Webhooks", request_body = UpdateWebhook, params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookView), (status = "4XX", body = Problem)),
    security(("bearer" = ["webhooks:write"])))]
pub async fn update(
    who: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    realm: Realm,
    path: web::Path<ScopedPath>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    let o = owner(&state, &who, realm, &path, true).await?;
    let input: UpdateWebhook = body.parse().await?;
    let view = service::update(&state, &Actor::of(&who, &req), o, path.id()?, input).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Delete a webhook endpoint.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "Webhooks", params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 204), (status = "4XX", body = Problem)),
    security(("bearer" = ["webhooks:write"])))]
pub async fn delete(
    who: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    realm: Realm,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let o = owner(&state, &who, realm, &path, true).await?;
    service::delete(&state, &Actor::of(&who, &req), o, path.id()?).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The delivery log of an endpoint, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "Webhooks", params(("id" = Uuid, Path, description = "Webhook id"), PageQuery),
    responses((status = 200, body = Page<DeliveryView>), (status = "4XX", body = Problem)),
    security(("bearer" = ["webhooks:read"])))]
pub async fn deliveries(
    who: Principal,
    state: web::Data<AppState>,
    realm: Realm,
    path: web::Path<ScopedPath>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    let o = owner(&state, &who, realm, &path, false).await?;
    let page = service::deliveries(&state, o, path.id()?, query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Send a signed test ping now and return its delivery.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "Webhooks", params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, body = DeliveryView), (status = "4XX", body = Problem)),
    security(("bearer" = ["webhooks:write"])))]
pub async fn test(
    who: Principal,
    state: web::Data<AppState>,
    realm: Realm,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let o = owner(&state, &who, realm, &path, true).await?;
    let delivery = service::test(&state, o, path.id()?).await?;
    Ok(HttpResponse::Ok().json(delivery))
}

/// `{id}` and `{delivery_id}` of the retry route (`{tenant}` on the admin form).
#[derive(Debug, serde::Deserialize)]
pub struct DeliveryPath {
    tenant: Option<String>,
    id: String,
    delivery_id: String,
}

/// Retry a failed delivery now: it goes back to the outbox, due at once, and
/// is sent with the same `webhook-id`; its attempts keep counting.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "Webhooks",
    params(("id" = Uuid, Path, description = "Webhook id"), ("delivery_id" = Uuid, Path, description = "Delivery id")),
    responses((status = 200, body = DeliveryView, description = "The delivery, pending again"),
        (status = 409, body = Problem, description = "Not failed (pending or succeeded), or the endpoint is disabled"),
        (status = "4XX", body = Problem)),
    security(("bearer" = ["webhooks:write"])))]
pub async fn retry(
    who: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
    realm: Realm,
    path: web::Path<DeliveryPath>,
) -> AppResult<HttpResponse> {
    let p = path.into_inner();
    let scoped = ScopedPath {
        tenant: p.tenant,
        id: Some(p.id.clone()),
    };
    let o = owner(&state, &who, realm, &scoped, true).await?;
    let actor = Actor::of(&who, &req);
    let view = super::retry::retry(&state, &actor, o, Some(&p.id), &p.delivery_id).await?;
    Ok(HttpResponse::Ok().json(view))
}
