//! `/v1/tenants` handlers: extract, check the permission, call the service.

use actix_web::{web, HttpResponse};

use super::input::{CreateTenant, UpdateTenant};
use super::model::TenantRef;
use super::service;
use crate::auth::Principal;
use crate::db::pagination::PageQuery;
use crate::domain::Permission;
use crate::error::AppResult;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/tenants")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/v1/tenants/{tenant}")
            .route(web::get().to(get))
            .route(web::put().to(update))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    );
}

async fn create(
    who: Principal,
    state: web::Data<AppState>,
    body: web::Json<CreateTenant>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::TenantsWrite)?;
    let tenant = service::create(&state, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(tenant))
}

async fn list(
    who: Principal,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::TenantsRead)?;
    let page = service::list(&state, query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn get(
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
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<UpdateTenant>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::TenantsWrite)?;
    let tenant = service::update(&state, TenantRef::parse(&path), body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(tenant))
}

async fn delete(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::TenantsWrite)?;
    service::delete(&state, TenantRef::parse(&path)).await?;
    Ok(HttpResponse::NoContent().finish())
}
