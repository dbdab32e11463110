//! `GET /v1/audit-log`.

use actix_web::http::Method;
use actix_web::{web, HttpResponse};

use super::service::{self, AuditEntryView, AuditQuery};
use crate::auth::Principal;
use crate::db::pagination::Page;
use crate::domain::Permission;
use crate::error::{AppResult, Problem};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;

pub fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint::new(
        Method::GET,
        "/v1/audit-log",
        Access::Any(Permission::AuditRead),
        || web::route().to(list),
    )]
}

/// The audit log, newest first: every entry for admin keys, the own
/// tenant's for tenant keys (`audit:read`).
#[utoipa::path(get, path = "/v1/audit-log", tag = "Audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditEntryView>), (status = "4XX", body = Problem)),
    security(("bearer" = ["audit:read"])))]
pub async fn list(
    who: Principal,
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> AppResult<HttpResponse> {
    who.require(Permission::AuditRead)?;
    let (filter, page) = query.into_inner().validate(who.tenant())?;
    Ok(HttpResponse::Ok().json(service::list(&state, filter, page).await?))
}
