//! Template routes: `/v1/templates` for tenant keys and
//! `/v1/tenants/{tenant}/templates` for admin keys (same handlers; the path
//! decides the tenant).

use actix_web::{web, HttpResponse};

use super::input::{CreateTemplate, RenderRequest, UpdateTemplate};
use super::model::TemplateRef;
use super::service;
use crate::auth::Principal;
use crate::db::pagination::PageQuery;
use crate::domain::{Permission, TenantId};
use crate::error::AppResult;
use crate::state::AppState;
use crate::tenants::scope::{self, ScopedPath};

pub fn configure(cfg: &mut web::ServiceConfig) {
    for base in ["/v1/templates", "/v1/tenants/{tenant}/templates"] {
        cfg.service(
            web::resource(base)
                .route(web::get().to(list))
                .route(web::post().to(create)),
        )
        .service(
            web::resource(format!("{base}/{{id}}"))
                .route(web::get().to(get))
                .route(web::put().to(update))
                .route(web::patch().to(update))
                .route(web::delete().to(delete)),
        )
        .service(web::resource(format!("{base}/{{id}}/render")).route(web::post().to(render)));
    }
}

async fn tenant(
    state: &AppState,
    who: &Principal,
    path: &ScopedPath,
    write: bool,
) -> AppResult<TenantId> {
    let p = if write {
        Permission::TemplatesWrite
    } else {
        Permission::TemplatesRead
    };
    scope::resolve(state, who, path, p, "templates").await
}

async fn create(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
    body: web::Json<CreateTemplate>,
) -> AppResult<HttpResponse> {
    let t = tenant(&state, &who, &path, true).await?;
    let view = service::create(&state, t, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(view))
}

async fn list(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    let t = tenant(&state, &who, &path, false).await?;
    let page = service::list(&state, t, query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn get(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let t = tenant(&state, &who, &path, false).await?;
    let view = service::get(&state, t, TemplateRef::parse(path.id()?)).await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn update(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
    body: web::Json<UpdateTemplate>,
) -> AppResult<HttpResponse> {
    let t = tenant(&state, &who, &path, true).await?;
    let view =
        service::update(&state, t, TemplateRef::parse(path.id()?), body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn delete(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
) -> AppResult<HttpResponse> {
    let t = tenant(&state, &who, &path, true).await?;
    service::delete(&state, t, TemplateRef::parse(path.id()?)).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn render(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<ScopedPath>,
    body: web::Json<RenderRequest>,
) -> AppResult<HttpResponse> {
    let t = tenant(&state, &who, &path, false).await?;
    let r = TemplateRef::parse(path.id()?);
    let rendered = service::preview(&state, t, r, body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(rendered))
}
