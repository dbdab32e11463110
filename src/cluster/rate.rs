//! Cluster-wide rates on leased budgets (DESIGN §15): a rate of `limit` per
//! `window` seconds is one budget per fixed window (name
//! `<what>:<window secs>:<window index>`, the window index counted from the
//! Unix epoch on each node's clock), whose shares the nodes lease and spend
//! in memory like the daily quota's. No query per request: a node asks
//! Postgres only when its share of the current window is spent.
//!
//! What counts as used: every unit granted. A grant's `used` is what the
//! other holders reported spent plus what this node spent in the window, so
//! `used + outstanding = Σ granted`, and the budget closes (refusals until
//! the window ends) when less than one share is left. Shares are sized by
//! the live node count ([`super::node::Registry::live_nodes`]):
//! `limit / (50 × nodes)`, at least 1, so at most about 2 % of a window can
//! be left unspent in other nodes' shares when it closes. A node's lease of
//! the current window is kept alive while the window lasts (its spending
//! stays counted); a dead node's stays counted until its lease is reclaimed.
//!
//! When the database cannot be reached for a grant, the request is admitted
//! (failing open: the send itself needs the database anyway) and logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text, Uuid as SqlUuid};
use diesel::PgConnection;
use uuid::Uuid;

use super::budget::{BudgetKey, Budgets, GrantRequest, Granted, Reserve};
use super::node::Registry;
use crate::db::PgPool;

/// What one admission decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    pub admitted: bool,
    /// What is left of the window, as far as this node knows.
    pub remaining: i64,
    /// Seconds until the window ends (the earliest a refusal may retry).
    pub reset_secs: u64,
}

#[derive(Default)]
struct Window {
    /// Spent by this node in the window (across its leases).
    spent: i64,
    /// Σ granted to the other holders at this node's last grant.
    others: i64,
}

/// This node's side of every cluster-wide rate.
#[derive(Clone)]
pub struct Rates {
    budgets: Budgets,
    registry: Registry,
    pool: PgPool,
    windows: Arc<Mutex<HashMap<BudgetKey, (u64, Window)>>>,
}

/// The share a node asks for: `limit / (50 × nodes)`, at least 1.
pub fn chunk(limit: i64, nodes: u32) -> i64 {
    (limit / (50 * i64::from(nodes.max(1)))).max(1)
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// The budget of the window running now: its key, when it ends (Unix
/// seconds) and the seconds until then (at least 1).
fn window(subject: Uuid, what: &str, window_secs: u64) -> (BudgetKey, u64, u64) {
    let window_secs = window_secs.max(1);
    let now = now_secs();
    let index = (now / window_secs as f64) as u64;
    let ends = (index + 1) * window_secs;
    let reset_secs = ((ends as f64 - now).ceil() as u64).max(1);
    let key = BudgetKey {
        tenant_id: subject,
        name: format!("{what}:{window_secs}:{index}"),
    };
    (key, ends, reset_secs)
}

impl Rates {
    pub fn new(budgets: Budgets, registry: Registry, pool: PgPool) -> Rates {
        Rates {
            budgets,
            registry,
            pool,
            windows: Arc::default(),
        }
    }

    /// The pool its grants use.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Slot budgets of the same node (holder) on the same pool.
    pub fn slots(&self, lease_secs: u64) -> super::slots::Slots {
        super::slots::Slots::new(self.budgets.holder(), lease_secs, self.pool.clone())
    }

    /// Counts one unit of `what` for `subject` (a tenant, or an admin key)
    /// against `limit` per `window_secs` across every node.
    pub async fn admit(
        &self,
        subject: Uuid,
        what: &str,
        limit: i64,
        window_secs: u64,
    ) -> Admission {
        let (key, ends, reset_secs) = window(subject, what, window_secs);
        let window_secs = window_secs.max(1);
        super::lease::lock(&self.windows)
            .entry(key.clone())
            .or_insert((ends, Window::default()));
        let reserved = match self.budgets.reserve(&key, limit, 1) {
            Reserve::Held(r) => Some(r),
            Reserve::Closed => None,
            Reserve::Grant => match self.grant(&key, limit, ends + window_secs).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, what, "rate grant failed; admitting without a share");
                    return Admission {
                        admitted: true,
                        remaining: 0,
                        reset_secs,
                    };
                }
            },
        };
        let admitted = reserved.is_some();
        if let Some(r) = reserved {
            r.spend();
        }
        let mut windows = super::lease::lock(&self.windows);
        let (_, w) = windows.entry(key).or_insert((ends, Window::default()));
        if admitted {
            w.spent += 1;
        }
        Admission {
            admitted,
            remaining: if admitted {
                (limit - w.others - w.spent).max(0)
            } else {
                0
            },
            reset_secs,
        }
    }

    /// Whether this node knows the current window of `what` for `subject`
    /// is closed at `limit` (its last grant found it spent): the seconds
    /// until the window ends. In memory, no query: a check before work
    /// that [`Rates::admit`] would refuse (an SMTP RCPT before its DATA).
    pub fn closed(&self, subject: Uuid, what: &str, limit: i64, window_secs: u64) -> Option<u64> {
        let (key, _, reset_secs) = window(subject, what, window_secs);
        self.budgets.is_closed(&key, limit).then_some(reset_secs)
    }

    /// Asks for a share of the window's budget (one short transaction).
    async fn grant(
        &self,
        key: &BudgetKey,
        limit: i64,
        keep_until: u64,
    ) -> crate::error::AppResult<Option<super::Reservation>> {
        let (me, rates) = (self.budgets.holder(), self.clone());
        let request = GrantRequest {
            key: key.clone(),
            limit,
            need: 1,
            chunk: chunk(limit, self.registry.live_nodes()),
            ends_at: DateTime::<Utc>::from_timestamp(keep_until as i64, 0).unwrap_or_else(Utc::now),
        };
        crate::db::run(&self.pool, move |conn| {
            let mut used = |c: &mut PgConnection, keys: &[BudgetKey]| {
                let others = others_spent(c, me, keys)?;
                let mut windows = super::lease::lock(&rates.windows);
                Ok(keys
                    .iter()
                    .map(|k| {
                        let theirs = others.get(k).copied().unwrap_or(0);
                        let w = windows.get_mut(k).map(|(_, w)| w);
                        let mine = w.as_ref().map_or(0, |w| w.spent);
                        if let Some(w) = w {
                            w.others = theirs;
                        }
                        (k.clone(), theirs + mine)
                    })
                    .collect())
            };
            let granted = rates.budgets.grant(conn, vec![request], &mut used)?;
            Ok(match granted.into_iter().next() {
                Some(Granted::Held(r)) => Some(r),
                _ => None,
            })
        })
        .await
    }

    /// Keeps this node's leases of windows still running alive (a lease
    /// unused for a lease period is released and its spending would stop
    /// counting) and forgets ended windows. Run every third of a lease.
    pub fn keep_alive(&self) {
        let now = now_secs() as u64;
        let mut windows = super::lease::lock(&self.windows);
        windows.retain(|_, (ends, _)| *ends > now);
        for key in windows.keys() {
            self.budgets.touch(key);
        }
    }

    pub fn spawn_keep_alive(&self, lease_secs: u64) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let period = (Duration::from_secs(lease_secs) / 3).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                me.keep_alive();
            }
        })
    }
}

#[derive(QueryableByName)]
struct SpentRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    budget: String,
    #[diesel(sql_type = BigInt)]
    spent: i64,
}

/// What the other holders reported spent of the budgets (read after the
/// grant locked their leases).
fn others_spent(
    conn: &mut PgConnection,
    me: Uuid,
    keys: &[BudgetKey],
) -> QueryResult<HashMap<BudgetKey, i64>> {
    let (ids, names): (Vec<Uuid>, Vec<String>) =
        keys.iter().map(|k| (k.tenant_id, k.name.clone())).unzip();
    let rows: Vec<SpentRow> = diesel::sql_query(
        "SELECT tenant_id, budget, sum(spent)::bigint AS spent FROM budget_leases \
         WHERE holder <> $1 AND (tenant_id, budget) IN (SELECT * FROM unnest($2, $3)) \
         GROUP BY tenant_id, budget",
    )
    .bind::<SqlUuid, _>(me)
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Text>, _>(&names)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                BudgetKey {
                    tenant_id: r.tenant_id,
                    name: r.budget,
                },
                r.spent,
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::chunk;

    #[test]
    fn shares_shrink_with_more_nodes_and_never_reach_zero() {
        assert_eq!(chunk(120, 3), 1);
        assert_eq!(chunk(6000, 1), 120);
        assert_eq!(chunk(6000, 3), 40);
        assert_eq!(chunk(1, 100), 1);
        assert_eq!(chunk(0, 0), 1);
    }
}
