//! Key management routes (admin keys only).

use actix_web::{web, HttpResponse};

use super::service::{self, CreateKey};
use crate::auth::Principal;
use crate::db::pagination::PageQuery;
use crate::domain::Permission;
use crate::error::AppResult;
use crate::state::AppState;
use crate::tenants::model::TenantRef;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/tenants/{tenant}/api-keys")
            .route(web::get().to(list_tenant_keys))
            .route(web::post().to(create_tenant_key)),
    )
    .service(
        web::resource("/v1/tenants/{tenant}/api-keys/{key}")
            .route(web::delete().to(revoke_tenant_key)),
    )
    .service(
        web::resource("/v1/admin-keys")
            .route(web::get().to(list_admin_keys))
            .route(web::post().to(create_admin_key)),
    )
    .service(web::resource("/v1/admin-keys/{key}").route(web::delete().to(revoke_admin_key)));
}

async fn create_tenant_key(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<CreateKey>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let key = service::create_tenant_key(&state, &who, TenantRef::parse(&path), body.into_inner())
        .await?;
    Ok(HttpResponse::Created().json(key))
}

async fn list_tenant_keys(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let page = service::list(&state, Some(TenantRef::parse(&path)), query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn revoke_tenant_key(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let (tenant, key) = path.into_inner();
    service::revoke(&state, Some(TenantRef::parse(&tenant)), &key).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn create_admin_key(
    who: Principal,
    state: web::Data<AppState>,
    body: web::Json<CreateKey>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let key = service::create_admin_key(&state, &who, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(key))
}

async fn list_admin_keys(
    who: Principal,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let page = service::list(&state, None, query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn revoke_admin_key(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    service::revoke(&state, None, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}
