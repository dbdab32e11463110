//! Admins only: the queue (depth by state, the oldest due message, the
//! tenants with the largest backlog), health (database, pool) and the nodes
//! (`crate::cluster::node`).

use actix_web::{web, HttpResponse};

use crate::console::model;
use crate::console::render::page;
use crate::console::session::ConsoleResult;
use crate::console::users::ConsoleUser;
use crate::console::Layout;
use crate::db;
use crate::domain::Permission;
use crate::state::AppState;

pub async fn show(user: ConsoleUser, state: web::Data<AppState>) -> ConsoleResult<HttpResponse> {
    user.who.require_admin(Permission::TenantsRead)?;
    let timeout = state.settings.cluster.node_timeout_secs;
    let overview = db::run(&state.pool, move |conn| {
        let depth = crate::queue::model::depth(conn)?
            .into_iter()
            .map(|r| (r.state, r.n))
            .collect::<Vec<_>>();
        Ok((
            depth,
            model::oldest_due(conn)?,
            model::backlog(conn)?,
            db::is_migrated(conn),
            crate::cluster::node::list(conn, timeout, crate::cluster::routes::MAX_NODES)
                .unwrap_or_default(),
        ))
    })
    .await;
    let (depth, oldest_due, backlog, migrated, nodes, database) = match overview {
        Ok((d, o, b, m, n)) => (d, o, b, m, n, true),
        Err(e) => {
            tracing::warn!(error = %e, "console queue page: database unreachable");
            (Vec::new(), None, Vec::new(), false, Vec::new(), false)
        }
    };
    let pool = state.pool.state();
    Ok(page(
        "queue.html",
        ctx! {
            layout => Layout::new(&state, &user, None, "queue").await,
            depth, oldest_due, backlog, nodes,
            health => ctx! {
                database, migrated,
                pool_connections => pool.connections, pool_idle => pool.idle_connections,
                version => env!("CARGO_PKG_VERSION"),
            },
        },
    )?)
}
