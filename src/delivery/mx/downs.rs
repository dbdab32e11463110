//! A site's "down" marking shared by the nodes (issue 27): a site whose
//! every MX address refused or dropped the TCP connection is not dialled
//! again for `delivery.mx.down_secs` by any node, not only by the node that
//! found it down. As the slow-downs (`super::slowdowns`), through Postgres:
//!
//! - The node that finds it down marks its own `Site` at once and upserts
//!   the site's row in `mx_site_downs` (`down_until` = now + `down_secs`,
//!   never earlier than a later marking already there; one statement per
//!   marking, rare: a down site's mail defers without dialling).
//! - Every node reads the rows still down on the slow-downs' once-a-second
//!   poll (one more indexed read on the same connection) and remembers how
//!   long each site stays down, on the database's clock.
//! - Before a message to a site is tried ([`super::SharedSites::down`]), a
//!   site another node marked down is marked down here until the same time,
//!   in memory: its mail defers at once, as on the node that found it.
//!
//! A site is down for the cluster until its marking ends, even if one node
//! connects to it meanwhile (a node that had not read the marking yet); the
//! next attempt after the end dials again, and marks it anew if it is still
//! down. Bounded: at most [`MAX_ROWS`] rows are read per poll; rows ended
//! more than a day ago are deleted by the poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Text};

use super::shaping::Site;
use crate::db::PgPool;

/// Rows read per poll at most (the latest to end first).
pub const MAX_ROWS: i64 = 10_000;

/// The sites marked down by any node, as last read.
#[derive(Clone)]
pub struct Downs {
    pool: PgPool,
    until: Arc<Mutex<HashMap<String, Instant>>>,
}

#[derive(QueryableByName)]
pub(super) struct Row {
    #[diesel(sql_type = Text)]
    site: String,
    /// Seconds the site stays down (on the database's clock).
    #[diesel(sql_type = Double)]
    left_secs: f64,
}

fn lock(
    m: &Mutex<HashMap<String, Instant>>,
) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn name(site: &Site) -> String {
    super::shared::budget_name("mx_down", site.key.as_str())
}

/// Marks `site` down for `secs` from now (a later end already there stays).
fn mark(conn: &mut PgConnection, site: &str, secs: f64) -> QueryResult<usize> {
    diesel::sql_query(
        "INSERT INTO mx_site_downs (site, down_until, marked_at) \
         VALUES ($1, now() + make_interval(secs => $2), now()) \
         ON CONFLICT (site) DO UPDATE SET \
         down_until = greatest(mx_site_downs.down_until, excluded.down_until), marked_at = now()",
    )
    .bind::<Text, _>(site)
    .bind::<Double, _>(secs)
    .execute(conn)
}

/// The sites down now; with `purge`, first up to 100 rows ended more than a
/// day ago are deleted.
pub(super) fn current(conn: &mut PgConnection, purge: bool) -> QueryResult<Vec<Row>> {
    if purge {
        diesel::sql_query(
            "DELETE FROM mx_site_downs WHERE site IN (SELECT site FROM mx_site_downs \
             WHERE down_until < now() - interval '1 day' LIMIT 100)",
        )
        .execute(conn)?;
    }
    diesel::sql_query(
        "SELECT site, extract(epoch FROM down_until - now())::float8 AS left_secs \
         FROM mx_site_downs WHERE down_until > now() ORDER BY down_until DESC LIMIT $1",
    )
    .bind::<BigInt, _>(MAX_ROWS)
    .load(conn)
}

impl Downs {
    pub fn new(pool: PgPool) -> Downs {
        Downs {
            pool,
            until: Arc::default(),
        }
    }

    /// This node found every address of `site` unreachable and marked it
    /// down for `for_`: tells the others (in a task of its own).
    pub fn publish(&self, site: &Site, for_: Duration) {
        let name = name(site);
        {
            let mut until = lock(&self.until);
            let end = Instant::now() + for_;
            let e = until.entry(name.clone()).or_insert(end);
            *e = (*e).max(end);
        }
        let pool = self.pool.clone();
        let secs = for_.as_secs_f64();
        tokio::spawn(async move {
            if let Err(e) = crate::db::run(&pool, move |conn| Ok(mark(conn, &name, secs)?)).await {
                tracing::warn!(error = %e, "a site's down marking not shared");
            }
        });
    }

    /// Marks `site` down here while another node's marking lasts (in
    /// memory; no query).
    pub fn apply(&self, site: &Site) {
        let end = lock(&self.until).get(&name(site)).copied();
        if let Some(end) = end.filter(|e| *e > Instant::now()) {
            site.mark_down_until(end);
        }
    }

    /// What the poll read.
    pub(super) fn set(&self, rows: Vec<Row>) {
        let now = Instant::now();
        *lock(&self.until) = rows
            .into_iter()
            .filter(|r| r.left_secs.is_finite() && r.left_secs > 0.0)
            .map(|r| {
                let left = Duration::from_secs_f64(r.left_secs.min(86_400.0));
                (r.site, now + left)
            })
            .collect();
    }
}
