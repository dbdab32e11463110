//! Webhook routes. Tenant endpoints: `/v1/webhooks` (tenant keys) and
//! `/v1/tenants/{tenant}/webhooks` (admin keys); platform-wide endpoints:
//! `/v1/admin/webhooks` (admin keys). One set of handlers; the resource's
//! [`Realm`] says which owner a path means.

use actix_web::{web, HttpResponse};

use super::input::{CreateWebhook, UpdateWebhook};
use super::model::Owner;
use super::service;
use crate::auth::Principal;
use crate::db::pagination::PageQuery;
use crate::domain::Permission;
use crate::error::AppResult;
use crate::state::AppState;
use crate::tenants::scope::{self, ScopedPath};

#[derive(Clone, Copy, Debug)]
enum Realm {
    Tenant,
    Platform,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    for (base, realm) in [
        ("/v1/webhooks", Realm::Tenant),
        ("/v1/tenants/{tenant}/webhooks", Realm::Tenant),
        ("/v1/admin/webhooks", Realm::Platform),
    ] {
        let data = web::Data::new(realm);
        cfg.service(
            web::resource(base)
                .app_data(data.clone())
                .route(web::get().to(list))
                .route(web::post().to(create)),
        )
        .service(
            web::resource(format!("{base}/{{id}}"))
                .app_data(data.clone())
                .route(web::get().to(get))
                .route(web::put().to(update))
                .route(web::patch().to(update))
                .route(web::delete().to(delete)),
        )
        .service(
            web::resource(format!("{base}/{{id}}/deliveries"))
                .app_data(data.clone())
                .route(web::get().to(deliveries)),
        )
        .service(
            web::resource(format!("{base}/{{id}}/test"))
                .app_data(data)
                .route(web::post().to(test)),
        );
    }
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

async fn create(
    who: Principal,
    state: web::Data<AppState>,
    realm: web::Data<Realm>,
    path: web::Path<ScopedPath>,
    body: web::Json<CreateWebhook>,
) -> AppResult<HttpResponse> {
    let o = owner(&state, &who, **realm, &path, true).await?;
    let created = service::create(&state, o, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(created))
}

async fn list(
    who: Principal,
    state: web::Data<AppState>,
    realm: web::Data<Realm>,
    path: web::Path<ScopedPath>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    let o = owner(&state, &who, **realm, &path, false).await?;
    let page = service::list(&state, o, query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn get(
    who: Principal,
    state: web::Data<AppState>,
    realm: web::Data<Realm>,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let o = owner(&state, &who, **realm, &path, false).await?;
    let view = service::get(&state, o, path.id()?).await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn update(
    who: Principal,
    state: web::Data<AppState>,
    realm: web::Data<Realm>,
    path: web::Path<ScopedPath>,
    body: web::Json<UpdateWebhook>,
) -> AppResult<HttpResponse> {
    let o = owner(&state, &who, **realm, &path, true).await?;
    let view = service::update(&state, o, path.id()?, body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn delete(
    who: Principal,
    state: web::Data<AppState>,
    realm: web::Data<Realm>,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let o = owner(&state, &who, **realm, &path, true).await?;
    service::delete(&state, o, path.id()?).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn deliveries(
    who: Principal,
    state: web::Data<AppState>,
    realm: web::Data<Realm>,
    path: web::Path<ScopedPath>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    let o = owner(&state, &who, **realm, &path, false).await?;
    let page = service::deliveries(&state, o, path.id()?, query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn test(
    who: Principal,
    state: web::Data<AppState>,
    realm: web::Data<Realm>,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let o = owner(&state, &who, **realm, &path, true).await?;
    let delivery = service::test(&state, o, path.id()?).await?;
    Ok(HttpResponse::Ok().json(delivery))
}
