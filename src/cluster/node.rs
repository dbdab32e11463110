//! The node registry (DESIGN §15): every process (`api`, `worker`, `serve`)
//! registers itself in `nodes` and heartbeats every third of
//! `cluster.node_timeout_secs`. A node whose last heartbeat is older than the
//! timeout, or that stopped cleanly, is `gone`; each heartbeat of a live node
//! also deletes the budget leases (`budget_leases`) a gone node still holds,
//! so its shares of every limit return to the others within the timeout
//! (even when `cluster.lease_secs` is longer). A node's id is its budget
//! holder id ([`crate::cluster::Budgets::holder`]). Rows of nodes gone for a
//! day are deleted. Every time here is the database's clock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Text, Timestamptz, Uuid as SqlUuid};
use diesel::PgConnection;
use serde::Serialize;
use uuid::Uuid;

use crate::db::PgPool;

/// What a process says about itself when it registers.
#[derive(Clone, Debug)]
pub struct Node {
    pub id: Uuid,
    pub hostname: String,
    pub roles: Vec<String>,
    pub version: String,
    pub started_at: DateTime<Utc>,
}

impl Node {
    /// This process: the hostname of the machine, the crate's version, now.
    pub fn this(id: Uuid, roles: &[&str]) -> Node {
        Node {
            id,
            hostname: hostname(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: Utc::now(),
        }
    }
}

/// One node as `GET /v1/admin/nodes` shows it.
#[derive(Debug, Serialize, QueryableByName, utoipa::ToSchema)]
pub struct NodeView {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub hostname: String,
    /// `api`, `worker` (a `serve` process has both).
    #[diesel(sql_type = Array<Text>)]
    pub roles: Vec<String>,
    #[diesel(sql_type = Text)]
    pub version: String,
    #[diesel(sql_type = Timestamptz)]
    pub started_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub heartbeat_at: DateTime<Utc>,
    /// `up`, or `gone`: stopped, or no heartbeat within
    /// `cluster.node_timeout_secs`.
    #[diesel(sql_type = Text)]
    #[schema(example = "up")]
    pub status: String,
}

/// The machine's hostname (`unknown` when it cannot be read).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(h) if rc == 0 && !h.is_empty() => h.to_string(),
        _ => "unknown".to_string(),
    }
}

/// Registers the node or records its heartbeat (a node forgotten meanwhile,
/// e.g. pruned or on a promoted standby, registers again).
pub fn beat(conn: &mut PgConnection, node: &Node) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO nodes (id, hostname, roles, version, started_at, heartbeat_at) \
         VALUES ($1, $2, $3, $4, $5, clock_timestamp()) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = clock_timestamp(), stopped_at = NULL, \
           roles = excluded.roles",
    )
    .bind::<SqlUuid, _>(node.id)
    .bind::<Text, _>(&node.hostname)
    .bind::<Array<Text>, _>(&node.roles)
    .bind::<Text, _>(&node.version)
    .bind::<Timestamptz, _>(node.started_at)
    .execute(conn)
    .map(|_| ())
}

/// Deletes up to 1000 budget leases held by gone nodes (in key order,
/// skipping rows a commit holds: those go at the next heartbeat), and the
/// rows of nodes gone for a day. Returns the leases deleted.
pub fn reclaim(conn: &mut PgConnection, me: Uuid, timeout_secs: u64) -> QueryResult<usize> {
    let leases = diesel::sql_query(
        "DELETE FROM budget_leases WHERE (tenant_id, budget, holder) IN ( \
           SELECT l.tenant_id, l.budget, l.holder FROM budget_leases l \
           JOIN nodes n ON n.id = l.holder \
           WHERE n.id <> $1 AND (n.stopped_at IS NOT NULL \
             OR n.heartbeat_at < clock_timestamp() - make_interval(secs => $2)) \
           ORDER BY l.tenant_id, l.budget, l.holder LIMIT 1000 FOR UPDATE OF l SKIP LOCKED)",
    )
    .bind::<SqlUuid, _>(me)
    .bind::<Double, _>(timeout_secs as f64)
    .execute(conn)?;
    diesel::sql_query(
        "DELETE FROM nodes WHERE coalesce(stopped_at, heartbeat_at) \
           < clock_timestamp() - interval '1 day'",
    )
    .execute(conn)?;
    Ok(leases)
}

/// Marks the node stopped (clean shutdown): it is `gone` at once.
pub fn stopped(conn: &mut PgConnection, id: Uuid) -> QueryResult<()> {
    diesel::sql_query("UPDATE nodes SET stopped_at = clock_timestamp() WHERE id = $1")
        .bind::<SqlUuid, _>(id)
        .execute(conn)
        .map(|_| ())
}

/// Every registered node, live ones first, then by start (at most
/// `limit`; the table holds only nodes seen within a day).
pub fn list(conn: &mut PgConnection, timeout_secs: u64, limit: i64) -> QueryResult<Vec<NodeView>> {
    diesel::sql_query(
        "SELECT id, hostname, roles, version, started_at, heartbeat_at, \
           CASE WHEN stopped_at IS NULL \
             AND heartbeat_at >= clock_timestamp() - make_interval(secs => $1) \
             THEN 'up' ELSE 'gone' END AS status \
         FROM nodes ORDER BY status DESC, started_at, id LIMIT $2",
    )
    .bind::<Double, _>(timeout_secs as f64)
    .bind::<BigInt, _>(limit)
    .load(conn)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// How many nodes are up.
pub fn live(conn: &mut PgConnection, timeout_secs: u64) -> QueryResult<i64> {
    let c: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM nodes WHERE stopped_at IS NULL \
           AND heartbeat_at >= clock_timestamp() - make_interval(secs => $1)",
    )
    .bind::<Double, _>(timeout_secs as f64)
    .get_result(conn)?;
    Ok(c.n)
}

/// This process's registration: heartbeats in the background and knows how
/// many nodes are up (what shares of a limit are sized by).
#[derive(Clone)]
pub struct Registry {
    node: Arc<std::sync::Mutex<Node>>,
    timeout_secs: u64,
    live: Arc<AtomicU32>,
}

impl Registry {
    pub fn new(node: Node, timeout_secs: u64) -> Registry {
        Registry {
            node: Arc::new(std::sync::Mutex::new(node)),
            timeout_secs: timeout_secs.max(1),
            live: Arc::new(AtomicU32::new(1)),
        }
    }

    fn node(&self) -> Node {
        super::lease::lock(&self.node).clone()
    }

    pub fn id(&self) -> Uuid {
        self.node().id
    }

    /// Adds a role (`serve` starts as `api` and adds `worker`); shown from
    /// the next heartbeat.
    pub fn add_role(&self, role: &str) {
        let mut node = super::lease::lock(&self.node);
        if !node.roles.iter().any(|r| r == role) {
            node.roles.push(role.to_string());
        }
    }

    /// Nodes up at the last heartbeat (at least 1: this one).
    pub fn live_nodes(&self) -> u32 {
        self.live.load(Ordering::Relaxed).max(1)
    }

    /// One heartbeat: register/beat, reclaim gone nodes' leases, purge ended
    /// budgets (up to 1000), count the live nodes.
    pub fn heartbeat(&self, conn: &mut PgConnection) -> QueryResult<()> {
        let node = self.node();
        beat(conn, &node)?;
        let reclaimed = reclaim(conn, node.id, self.timeout_secs)?;
        if reclaimed > 0 {
            tracing::info!(leases = reclaimed, "reclaimed the leases of gone nodes");
            super::decision("reclaimed");
        }
        // Rates make a budget per subject and window (a second for
        // `emails_per_second`): purged here too, not only once a minute.
        super::Budgets::purge(conn)?;
        let n = live(conn, self.timeout_secs)?;
        self.live.store(
            u32::try_from(n).unwrap_or(u32::MAX).max(1),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Heartbeats every third of the timeout (the first at once) until
    /// the handle is aborted; a failed beat is logged and retried.
    pub fn spawn(&self, pool: PgPool) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let period = (Duration::from_secs(self.timeout_secs) / 3).max(Duration::from_millis(200));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let beat = me.clone();
                if let Err(e) = crate::db::run(&pool, move |c| Ok(beat.heartbeat(c)?)).await {
                    tracing::warn!(error = %e, "node heartbeat failed");
                }
            }
        })
    }

    /// Clean shutdown: the node is `gone` at once.
    pub async fn stop(&self, pool: &PgPool) {
        let id = self.id();
        if let Err(e) = crate::db::run(pool, move |c| Ok(stopped(c, id)?)).await {
            tracing::warn!(error = %e, "marking this node stopped failed; it goes by timeout");
        }
    }
}
