//! Cluster-wide concurrency budgets (DESIGN §15): a limit on how many of
//! something may be open at once across every node (an MX site's
//! connections), on the same `budgets` / `budget_leases` rows as the spent
//! budgets. A rate budget is spent; a slot is held and given back, so:
//!
//! - A node's lease of a slot budget is the number of slots it may hold
//!   (`granted`; `spent` stays 0). Taking a slot is in memory while the lease
//!   has one unheld; otherwise the lease grows by one in a short transaction
//!   (lock the budget row, then its leases; free = limit − Σ live leases'
//!   `granted`), or the ask is refused (nothing is revoked: a held slot is
//!   an open connection). A refusal is remembered for [`REFUSAL`], so
//!   waiters on one node ask Postgres at most that often.
//! - A slot dropped goes back to the node's lease, not to Postgres: the
//!   next connection of the node reuses it without a query. Slots unheld
//!   for a whole renewal period (a third of `cluster.lease_secs`) are given
//!   back: the lease shrinks to what is held, and goes when nothing is held.
//! - A dead node's leases lapse after `cluster.lease_secs` and are deleted
//!   by the registry's heartbeat after `cluster.node_timeout_secs`
//!   ([`super::node`]), so its slots return within the node timeout.
//! - A lease found lapsed at renewal (the node looked dead) is forgotten; the
//!   slots still held are counted into the next grant's lease.
//!
//! No fairness between nodes beyond first come: a busy node keeps the
//! slots it uses; every node claims from the same queue, so mail to the
//! site still goes out at the site's concurrency. When Postgres cannot be
//! reached a new slot is refused (the delivery is requeued).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use diesel::prelude::*;
use uuid::Uuid;

use super::budget::BudgetKey;
use super::lease::lock;
use super::store;
use crate::db::PgPool;

/// How long a refused grant is remembered before a node asks again.
pub const REFUSAL: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Lease {
    /// The live lease (`None`: never granted, given back, or lapsed).
    lease: Option<Uuid>,
    limit: i64,
    granted: i64,
    /// Slots held now (open connections).
    held: i64,
    /// Since when some granted slot has been unheld.
    spare_since: Option<Instant>,
    refused_until: Option<Instant>,
}

struct Inner {
    holder: Uuid,
    lease_secs: u64,
    pool: PgPool,
    state: Mutex<HashMap<BudgetKey, Lease>>,
    /// One grant or renewal at a time on this node.
    granting: tokio::sync::Mutex<()>,
}

/// This node's side of every slot budget.
#[derive(Clone)]
pub struct Slots {
    inner: Arc<Inner>,
}

/// A held slot; back to the node's lease when dropped.
pub struct Slot {
    inner: Arc<Inner>,
    key: BudgetKey,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("budget", &self.key.name)
            .finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = lock(&self.inner.state);
        if let Some(l) = state.get_mut(&self.key) {
            l.held -= 1;
            if l.held < l.granted && l.spare_since.is_none() {
                l.spare_since = Some(Instant::now());
            }
        }
    }
}

/// Platform-wide slot budgets use the nil tenant (never a tenant's id).
fn key(name: &str) -> BudgetKey {
    BudgetKey {
        tenant_id: Uuid::nil(),
        name: name.to_string(),
    }
}

impl Slots {
    /// `holder`: the node's budget holder id (its node id).
    pub fn new(holder: Uuid, lease_secs: u64, pool: PgPool) -> Slots {
        Slots {
            inner: Arc::new(Inner {
                holder,
                lease_secs: lease_secs.max(1),
                pool,
                state: Mutex::default(),
                granting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// A slot of budget `name` (at most `limit` held across the cluster)
    /// now, or `None` (refused: the cluster holds `limit`).
    pub async fn take(&self, name: &str, limit: i64) -> Option<Slot> {
        self.take_key(key(name), limit).await
    }

    /// A slot of a tenant's budget `name` (e.g. its SMTP sessions).
    pub async fn take_for(&self, tenant_id: Uuid, name: &str, limit: i64) -> Option<Slot> {
        let key = BudgetKey {
            tenant_id,
            name: name.to_string(),
        };
        self.take_key(key, limit).await
    }

    async fn take_key(&self, key: BudgetKey, limit: i64) -> Option<Slot> {
        match self.take_leased(&key, limit) {
            Ok(slot) => return Some(slot),
            Err(true) => return None,
            Err(false) => {}
        }
        let _one = self.inner.granting.lock().await;
        let (mine, held) = match self.take_leased(&key, limit) {
            Ok(slot) => return Some(slot),
            Err(true) => return None,
            Err(false) => {
                let state = lock(&self.inner.state);
                let l = state.get(&key);
                (
                    l.and_then(|l| l.lease.filter(|_| l.limit == limit)),
                    l.map_or(0, |l| l.held),
                )
            }
        };
        let (holder, lease_secs, k) = (self.inner.holder, self.inner.lease_secs, key.clone());
        let granted = crate::db::run(&self.inner.pool, move |conn| {
            Ok(conn.transaction(|c| grant(c, holder, lease_secs, &k, limit, mine, held))?)
        })
        .await;
        let mut state = lock(&self.inner.state);
        let l = state.entry(key.clone()).or_default();
        match granted {
            Ok(Some((lease, granted))) => {
                l.lease = Some(lease);
                l.limit = limit;
                l.granted = granted;
                l.refused_until = None;
                super::decision("granted");
                l.held += 1;
                if l.held >= l.granted {
                    l.spare_since = None;
                }
                Some(Slot {
                    inner: self.inner.clone(),
                    key,
                })
            }
            Ok(None) => {
                l.refused_until = Some(Instant::now() + REFUSAL);
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, budget = %key.name, "slot grant failed; refusing");
                l.refused_until = Some(Instant::now() + REFUSAL * 10);
                None
            }
        }
    }

    /// A slot from the node's lease: `Err(true)` refused recently,
    /// `Err(false)` ask for a grant.
    fn take_leased(&self, key: &BudgetKey, limit: i64) -> Result<Slot, bool> {
        let mut state = lock(&self.inner.state);
        let l = state.entry(key.clone()).or_default();
        if l.lease.is_some() && l.limit == limit && l.held < l.granted {
            l.held += 1;
            if l.held >= l.granted {
                l.spare_since = None;
            }
            return Ok(Slot {
                inner: self.inner.clone(),
                key: key.clone(),
            });
        }
        Err(l.refused_until.is_some_and(|u| Instant::now() < u))
    }

    /// Slots held on this node now (tests, metrics).
    pub fn held(&self, name: &str) -> i64 {
        lock(&self.inner.state)
            .get(&key(name))
            .map_or(0, |l| l.held)
    }

    /// One renewal round: gives back slots unheld for `spare` (the lease
    /// shrinks to what is held, or goes), renews the rest.
    pub async fn renew(&self, spare: Duration) -> crate::error::AppResult<()> {
        let _one = self.inner.granting.lock().await;
        let (mut shrink, mut release) = (Vec::new(), Vec::new());
        {
            let mut state = lock(&self.inner.state);
            state.retain(|key, l| {
                let Some(lease) = l.lease else {
                    return l.held > 0 || l.refused_until.is_some_and(|u| Instant::now() < u);
                };
                if l.spare_since.is_some_and(|s| s.elapsed() >= spare) {
                    l.granted = l.held;
                    l.spare_since = None;
                }
                if l.granted == 0 {
                    release.push((key.clone(), lease));
                    return false;
                }
                shrink.push((key.clone(), lease, l.granted));
                true
            });
        }
        if shrink.is_empty() && release.is_empty() {
            return Ok(());
        }
        let (holder, lease_secs) = (self.inner.holder, self.inner.lease_secs);
        let lapsed = crate::db::run(&self.inner.pool, move |conn| {
            let refs: Vec<(&BudgetKey, Uuid)> = release.iter().map(|(k, l)| (k, *l)).collect();
            store::release(conn, holder, &refs)?;
            let mut lapsed = Vec::new();
            for (key, lease, granted) in shrink {
                if !store::set_granted(conn, holder, &key, lease, granted, lease_secs)? {
                    lapsed.push((key, lease));
                }
            }
            Ok(lapsed)
        })
        .await?;
        let mut state = lock(&self.inner.state);
        for (key, lease) in lapsed {
            if let Some(l) = state.get_mut(&key) {
                if l.lease == Some(lease) {
                    l.lease = None;
                    l.granted = 0;
                    super::decision("lapsed");
                }
            }
        }
        Ok(())
    }

    /// Renews every third of a lease (slots unheld that long are given back).
    pub fn spawn_renewer(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let period =
            (Duration::from_secs(self.inner.lease_secs) / 3).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                if let Err(e) = me.renew(period).await {
                    tracing::warn!(error = %e, "slot lease renewal failed");
                }
            }
        })
    }
}

/// The grant transaction: one more slot for `holder` if the live leases
/// leave one free; `(lease, granted)` or `None` (refused). A lease that is
/// not `mine` (lapsed, or a previous one) is replaced by one covering the
/// `held` slots plus the new one.
fn grant(
    c: &mut PgConnection,
    holder: Uuid,
    lease_secs: u64,
    key: &BudgetKey,
    limit: i64,
    mine: Option<Uuid>,
    held: i64,
) -> QueryResult<Option<(Uuid, i64)>> {
    let ends = Utc::now() + chrono::Duration::days(1);
    store::lock_budgets(c, &[(key, ends)])?;
    store::extend_budget(c, key)?;
    let rows = store::lock_leases(c, &[key])?;
    let (mut others, mut own, mut gone) = (0, None, Vec::new());
    for r in &rows {
        if r.holder == holder {
            if Some(r.lease) == mine && !r.expired {
                own = Some(r.granted);
            } else {
                gone.push((key, r.holder));
            }
        } else if r.expired {
            gone.push((key, r.holder));
        } else {
            others += r.granted.max(0);
        }
    }
    store::delete_leases(c, &gone)?;
    let want = own.unwrap_or(held) + 1;
    if others + want > limit {
        return Ok(None);
    }
    match (own, mine) {
        (Some(_), Some(lease)) => {
            store::put_lease(c, key, holder, lease, true, 1, 0, lease_secs)?;
            Ok(Some((lease, want)))
        }
        _ => {
            let lease = Uuid::new_v4();
            store::put_lease(c, key, holder, lease, false, want, 0, lease_secs)?;
            Ok(Some((lease, want)))
        }
    }
}
