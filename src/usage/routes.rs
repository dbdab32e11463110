//! Usage routes: per tenant (admin) and the billing listing.

use actix_web::{web, HttpResponse};

use super::service::{self, UsageQuery};
use crate::auth::Principal;
use crate::domain::Permission;
use crate::error::AppResult;
use crate::state::AppState;
use crate::tenants::model::TenantRef;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/tenants/{tenant}/usage").route(web::get().to(for_tenant)))
        .service(web::resource("/v1/usage").route(web::get().to(list)));
}

async fn for_tenant(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<UsageQuery>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::UsageRead)?;
    let usage = service::for_tenant(&state, TenantRef::parse(&path), &query).await?;
    Ok(HttpResponse::Ok().json(usage))
}

async fn list(
    who: Principal,
    state: web::Data<AppState>,
    query: web::Query<UsageQuery>,
) -> AppResult<HttpResponse> {
    let body = service::list(&state, &who, query.into_inner()).await?;
    Ok(HttpResponse::Ok().json(body))
}
