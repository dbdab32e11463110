//! `GET /v1/admin/nodes`: the node registry (admin keys, `tenants:read`).

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::node::{self, NodeView};
use crate::auth::Principal;
use crate::domain::Permission;
use crate::error::{AppResult, Problem};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;

/// At most this many nodes are listed (the registry forgets nodes gone for
/// a day, so a real installation stays far below).
pub const MAX_NODES: i64 = 1000;

pub fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint::new(
        Method::GET,
        "/v1/admin/nodes",
        Access::Admin(Permission::TenantsRead),
        || web::route().to(list),
    )]
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct NodeList {
    pub data: Vec<NodeView>,
}

/// The processes of the installation (`api`, `worker`, `serve`), up ones
/// first: a node is `gone` when it stopped or missed
/// `cluster.node_timeout_secs` of heartbeats; its leases of shared limits
/// have then returned to the others. Nodes gone for a day are forgotten.
#[utoipa::path(get, path = "/v1/admin/nodes", tag = "Operations",
    responses((status = 200, body = NodeList), (status = "4XX", body = Problem)),
    security(("bearer" = ["tenants:read"])))]
pub async fn list(who: Principal, state: web::Data<AppState>) -> AppResult<HttpResponse> {
    who.require_admin(Permission::TenantsRead)?;
    let timeout = state.settings.cluster.node_timeout_secs;
    let data = crate::db::run(&state.pool, move |c| Ok(node::list(c, timeout, MAX_NODES)?)).await?;
    Ok(HttpResponse::Ok().json(NodeList { data }))
}
