//! A site's "slow down" shared by the nodes (issue 27): a 421 / 4.7.x from
//! a site halves the rate of every node sending to it, not only of the node
//! that saw it. Through Postgres, cheaply:
//!
//! - The node that sees it halves its own rate at once (`Site::slow_down`)
//!   and bumps the site's row in `mx_slowdowns` (one upsert per slow-down;
//!   rare). The row is keyed by the (pool, site) name of the site's shared
//!   budgets (`mx_slow:<site>`).
//! - Every node reads the rows changed within `delivery.mx.slowdown_secs`
//!   once a second (one indexed query per node per second, whatever the
//!   traffic) and remembers each site's count.
//! - Before a message to a site is admitted ([`super::SharedSites::rate`]),
//!   a site whose count moved past what this node applied is halved once
//!   per slow-down it has not applied (at most 6: the floor is 1/64), in
//!   memory. The cluster-wide rate budget follows the halved rate, so the
//!   cluster as a whole slows down, and each node's recovery doubles it
//!   back after each quiet `slowdown_secs` as before.
//!
//! A node that starts (or first sends to the site) while the site is slowed
//! applies one halving. Bounded: only the rows of the last `slowdown_secs`
//! are read (at most [`MAX_ROWS`]); past [`MAX_ROWS`] applied counts, those
//! of sites no longer slowed are forgotten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Text};

use super::shaping::Site;
use crate::db::PgPool;

/// Rows read per poll at most (the most recently slowed first).
pub const MAX_ROWS: i64 = 10_000;
/// The most halvings applied at once (the floor is 1/64 of the limit).
const MAX_HALVINGS: u64 = 6;

#[derive(Default)]
struct Counts {
    /// Each recently slowed site's count, as last read.
    latest: HashMap<String, u64>,
    /// The count this node has applied (or published) per site.
    applied: HashMap<String, u64>,
}

#[derive(Clone)]
pub struct Slowdowns {
    pool: PgPool,
    window: Duration,
    counts: Arc<Mutex<Counts>>,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    site: String,
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

fn lock(m: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn name(site: &Site) -> String {
    super::shared::budget_name("mx_slow", site.key.as_str())
}

/// Counts one slow-down of `site`; its new count.
fn bump(conn: &mut PgConnection, site: &str) -> QueryResult<i64> {
    diesel::sql_query(
        "INSERT INTO mx_slowdowns (site, seq, slowed_at) VALUES ($1, 1, now()) \
         ON CONFLICT (site) DO UPDATE SET seq = mx_slowdowns.seq + 1, slowed_at = now() \
         RETURNING site, seq",
    )
    .bind::<Text, _>(site)
    .get_result::<Row>(conn)
    .map(|r| r.seq)
}

/// The sites slowed within `window_secs`; with `purge`, first up to 100
/// rows slowed more than a day ago are deleted.
fn recent(conn: &mut PgConnection, window_secs: f64, purge: bool) -> QueryResult<Vec<Row>> {
    if purge {
        diesel::sql_query(
            "DELETE FROM mx_slowdowns WHERE site IN (SELECT site FROM mx_slowdowns \
             WHERE slowed_at < now() - interval '1 day' LIMIT 100)",
        )
        .execute(conn)?;
    }
    diesel::sql_query(
        "SELECT site, seq FROM mx_slowdowns \
         WHERE slowed_at > now() - make_interval(secs => $1) ORDER BY slowed_at DESC LIMIT $2",
    )
    .bind::<Double, _>(window_secs)
    .bind::<BigInt, _>(MAX_ROWS)
    .load(conn)
}

/// Halvings owed: the count moved from `applied` (none: one, the site is
/// slowed now) to `latest`, at most [`MAX_HALVINGS`].
fn owed(latest: u64, applied: Option<u64>) -> u64 {
    match applied {
        None => u64::from(latest > 0).min(MAX_HALVINGS),
        Some(a) => latest.saturating_sub(a).min(MAX_HALVINGS),
    }
}

impl Slowdowns {
    /// `slowdown`: `delivery.mx.slowdown_secs` (how long a slow-down counts).
    pub fn new(pool: PgPool, slowdown: Duration) -> Slowdowns {
        Slowdowns {
            pool,
            window: slowdown.max(Duration::from_secs(1)),
            counts: Arc::default(),
        }
    }

    /// This node saw `site` ask to slow down (and halved its own rate):
    /// tells the others (in a task of its own).
    pub fn publish(&self, site: &Site) {
        let (me, name) = (self.clone(), name(site));
        {
            // Counted as applied at once, so a poll before the upsert ends
            // does not halve this node a second time for its own.
            let mut c = lock(&self.counts);
            let known = c.latest.get(&name).copied().unwrap_or(0);
            let a = c.applied.entry(name.clone()).or_insert(0);
            *a = (*a).max(known) + 1;
        }
        tokio::spawn(async move {
            let n = name.clone();
            match crate::db::run(&me.pool, move |conn| Ok(bump(conn, &n)?)).await {
                Ok(seq) => {
                    let seq = u64::try_from(seq).unwrap_or(0);
                    let mut c = lock(&me.counts);
                    let a = c.applied.entry(name).or_insert(0);
                    *a = (*a).max(seq);
                }
                Err(e) => tracing::warn!(error = %e, "a site's slow-down not shared"),
            }
        });
    }

    /// Halves `site` once per slow-down another node saw that this node has
    /// not applied yet (in memory; no query).
    pub fn apply(&self, site: &Site) {
        let name = name(site);
        let n = {
            let mut c = lock(&self.counts);
            let Some(&latest) = c.latest.get(&name) else {
                return;
            };
            let n = owed(latest, c.applied.get(&name).copied());
            c.applied.insert(name, latest);
            n
        };
        for _ in 0..n {
            site.slow_down();
        }
    }

    /// Reads the recent slow-downs and the sites marked down (once a
    /// second, on one connection).
    pub async fn poll(
        &self,
        purge: bool,
        downs: &super::downs::Downs,
    ) -> crate::error::AppResult<()> {
        let window = self.window.as_secs_f64();
        let (rows, down) = crate::db::run(&self.pool, move |conn| {
            Ok((
                recent(conn, window, purge)?,
                super::downs::current(conn, purge)?,
            ))
        })
        .await?;
        downs.set(down);
        let mut c = lock(&self.counts);
        c.latest = rows
            .into_iter()
            .map(|r| (r.site, u64::try_from(r.seq).unwrap_or(0)))
            .collect();
        // Forgotten only when many: an entry this node just published may
        // not be readable yet, and must not be applied again.
        let Counts { latest, applied } = &mut *c;
        if applied.len() > MAX_ROWS as usize {
            applied.retain(|k, _| latest.contains_key(k));
        }
        Ok(())
    }

    /// Polls every second (the sites marked down too).
    pub async fn run(self, downs: super::downs::Downs) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 0u64.. {
            tick.tick().await;
            if let Err(e) = self.poll(n % 600 == 0, &downs).await {
                tracing::debug!(error = %e, "reading sites' slow-downs and down markings failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::owed;

    #[test]
    fn each_unapplied_slow_down_halves_once_up_to_the_floor() {
        assert_eq!(owed(3, Some(3)), 0);
        assert_eq!(owed(4, Some(3)), 1);
        assert_eq!(owed(5, Some(3)), 2);
        assert_eq!(owed(100, Some(3)), 6);
        assert_eq!(owed(7, None), 1, "a site slowed before this node knew it");
        assert_eq!(owed(2, Some(5)), 0);
    }
}
