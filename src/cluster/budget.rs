//! One budget mechanism for every shared limit (DESIGN §15): a budget is a
//! limit shared by all nodes, identified by (tenant, name), e.g. the daily
//! quota `emails_per_day:2026-12-06`. A node (a *holder*: one process)
//! leases a share of it in a short transaction of its own and spends that
//! share in memory, so the hot path asks Postgres nothing but "is my lease
//! still live". A lease lives `cluster.lease_secs` unless renewed; a dead
//! holder's lease lapses and its unspent part returns to the others.
//!
//! The rules (the owner of a budget supplies its limit and `used`, what was
//! spent and is already counted durably, e.g. the day's `emails_sent`):
//! - **Grant** ([`Budgets::grant`]): lock the budget's row, then every lease
//!   row of it `FOR UPDATE` (this waits for the commits spending from them,
//!   see *Spend*), delete lapsed leases, read `used`. `free = limit - used -
//!   Σ others' (granted - spent) - own (granted - spent)`. If `free ≥
//!   max(need, chunk)`, the holder's lease grows (`grant::decide`);
//!   otherwise the budget **closes**: every lease of it is revoked (deleted;
//!   whatever was spent from them is in `used` already, because their
//!   commits finished before the lock was granted) and it stays closed while
//!   the limit is at most the limit it closed at.
//! - **Spend**: [`Budgets::reserve`] takes units from the holder's lease in
//!   memory before the commit; the commit checks the lease with
//!   [`Budgets::hold`] (`FOR KEY SHARE`, live and still this lease) and counts
//!   what it spends in `used` in the same transaction. A reservation is
//!   spent, given back (dropped), or lost (the lease is gone: the work is
//!   retried without it).
//! - **Exact decisions** ([`Budgets::lock_exact`]) when a budget is closed:
//!   the caller locks the budget's row in its own transaction and admits only
//!   what fits under `limit - used - Σ every lease's (granted - spent)`.
//!   A closed budget has no leases, so this is exact.
//! - **Renewal** ([`Budgets::renew`], every third of a lease): extends the
//!   leases used within the last lease period and reports their `spent`;
//!   releases idle ones (the row goes) and lapsed or revoked ones.
//!
//! Lock order, in every transaction: `budgets` rows (key order), then
//! `budget_leases` rows (key order, then holder), then anything else (the
//! usage counters). No statement locks lease rows before budget rows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::PgConnection;
use uuid::Uuid;

use super::grant::{self, Ask, Mine, Outcome};
use super::lease::{lock, Held, State};
use super::store;

pub use super::grant::{GrantRequest, Granted, Used};
pub use super::lease::{Reservation, Reserve};

/// A budget: whose, and which (its name includes its period).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BudgetKey {
    pub tenant_id: Uuid,
    pub name: String,
}

/// A holder's leases and the budgets it knows are closed.
#[derive(Clone)]
pub struct Budgets {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    holder: Uuid,
    lease_secs: u64,
    pub(super) state: Mutex<HashMap<BudgetKey, State>>,
    /// One grant at a time per budget on this node; later askers then find
    /// the share the first one got.
    granting: Mutex<HashMap<BudgetKey, Arc<Mutex<()>>>>,
}

/// How long a closed budget is remembered without being asked about.
const CLOSED_MEMORY: Duration = Duration::from_secs(60);

impl Budgets {
    /// A holder with a fresh id (one per process).
    pub fn new(lease_secs: u64) -> Budgets {
        Budgets {
            inner: Arc::new(Inner {
                holder: Uuid::new_v4(),
                lease_secs: lease_secs.max(1),
                state: Mutex::default(),
                granting: Mutex::default(),
            }),
        }
    }

    pub fn holder(&self) -> Uuid {
        self.inner.holder
    }

    /// Takes `n` units of the holder's lease of `key` granted under `limit`.
    pub fn reserve(&self, key: &BudgetKey, limit: i64, n: i64) -> Reserve {
        self.reserve_in(&mut lock(&self.inner.state), key, limit, n)
    }

    fn reserve_in(
        &self,
        state: &mut HashMap<BudgetKey, State>,
        key: &BudgetKey,
        limit: i64,
        n: i64,
    ) -> Reserve {
        match state.get_mut(key) {
            Some(State::Held(h)) if !h.lost && h.limit == limit && h.free() >= n => {
                h.reserved += n;
                h.last_used = Instant::now();
                Reserve::Held(Reservation::new(
                    self.inner.clone(),
                    key.clone(),
                    h.lease,
                    n,
                ))
            }
            Some(State::Closed { limit: at, touched }) if *at == limit => {
                *touched = Instant::now();
                Reserve::Closed
            }
            _ => Reserve::Grant,
        }
    }

    /// Whether the holder's last grant of `key` found it closed at `limit`
    /// (in memory; the state is forgotten a minute after its last use).
    pub fn is_closed(&self, key: &BudgetKey, limit: i64) -> bool {
        matches!(
            lock(&self.inner.state).get(key),
            Some(State::Closed { limit: at, .. }) if *at == limit
        )
    }

    /// Marks the holder's lease of `key` used now, so the renewal does not
    /// release it as idle (cluster-wide rates keep a window's lease).
    pub fn touch(&self, key: &BudgetKey) {
        if let Some(State::Held(h)) = lock(&self.inner.state).get_mut(key) {
            h.last_used = Instant::now();
        }
    }

    /// Grants shares for the requests in one short transaction of its own
    /// (the rules in the module doc); `used` reads what each budget has
    /// spent durably, after the locks. One answer per request, in order.
    pub fn grant(
        &self,
        conn: &mut PgConnection,
        requests: Vec<GrantRequest>,
        used: &mut Used<'_>,
    ) -> QueryResult<Vec<Granted>> {
        // Single flight per budget, taken in key order.
        let mut keys: Vec<&BudgetKey> = requests.iter().map(|r| &r.key).collect();
        keys.sort();
        keys.dedup();
        let gates: Vec<Arc<Mutex<()>>> = {
            let mut g = lock(&self.inner.granting);
            keys.iter()
                .map(|k| g.entry((*k).clone()).or_default().clone())
                .collect()
        };
        let _held: Vec<MutexGuard<'_, ()>> = gates.iter().map(|g| lock(g)).collect();
        // Another writer may have been granted enough while this one waited.
        let mut answers: Vec<Option<Granted>> = requests
            .iter()
            .map(|r| match self.reserve(&r.key, r.limit, r.need) {
                Reserve::Held(res) => Some(Granted::Held(res)),
                _ => None,
            })
            .collect();
        let mut asks: BTreeMap<BudgetKey, Ask> = BTreeMap::new();
        for (r, _) in requests.iter().zip(&answers).filter(|(_, a)| a.is_none()) {
            let a = asks.entry(r.key.clone()).or_insert(Ask {
                limit: r.limit,
                need: 0,
                chunk: r.chunk,
                ends_at: r.ends_at,
            });
            a.need += r.need;
            a.limit = r.limit;
        }
        if asks.is_empty() {
            return Ok(answers.into_iter().flatten().collect());
        }
        let mine: HashMap<BudgetKey, Mine> = {
            let state = lock(&self.inner.state);
            let lease = Duration::from_secs(self.inner.lease_secs);
            asks.keys()
                .filter_map(|k| match state.get(k) {
                    Some(State::Held(h)) if !h.lost => Some((
                        k.clone(),
                        Mine {
                            lease: h.lease,
                            spent: h.spent,
                            size: h.size,
                            age: (h.granted_at.elapsed().as_millis() / lease.as_millis().max(1))
                                .try_into()
                                .unwrap_or(u32::MAX),
                        },
                    )),
                    _ => None,
                })
                .collect()
        };
        let (holder, lease_secs) = (self.inner.holder, self.inner.lease_secs);
        let outcomes =
            conn.transaction(|c| grant::run(c, holder, lease_secs, &asks, &mine, used))?;
        let mut state = lock(&self.inner.state);
        for (key, outcome) in outcomes {
            let limit = asks.get(&key).map_or(0, |a| a.limit);
            super::decision(match outcome {
                Outcome::Granted { .. } => "granted",
                Outcome::Closed => "closed",
            });
            match outcome {
                Outcome::Closed => {
                    state.insert(
                        key,
                        State::Closed {
                            limit,
                            touched: Instant::now(),
                        },
                    );
                }
                Outcome::Granted { lease, add, extend } => match state.get_mut(&key) {
                    Some(State::Held(h)) if extend && h.lease == lease && !h.lost => {
                        h.granted += add;
                        h.limit = limit;
                        h.size = add;
                        h.granted_at = Instant::now();
                    }
                    // A lease lost while its extension was being granted:
                    // left for the renewal to release.
                    _ if extend => {}
                    _ => {
                        state.insert(
                            key,
                            State::Held(Held {
                                lease,
                                limit,
                                granted: add,
                                spent: 0,
                                reserved: 0,
                                lost: false,
                                last_used: Instant::now(),
                                size: add,
                                granted_at: Instant::now(),
                            }),
                        );
                    }
                },
            }
        }
        // Taken while the state is still locked, so the new share is not
        // spent by other writers first.
        for (answer, r) in answers.iter_mut().zip(&requests) {
            if answer.is_none() {
                *answer = Some(match self.reserve_in(&mut state, &r.key, r.limit, r.need) {
                    Reserve::Held(res) => Granted::Held(res),
                    _ => Granted::Locked,
                });
            }
        }
        drop(state);
        Ok(answers.into_iter().flatten().collect())
    }

    /// In a commit spending `reservations`: locks their leases `FOR KEY SHARE`
    /// and returns the budgets whose lease is still live (the others' units
    /// must not be spent: [`Reservation::lose`] them and retry).
    pub fn hold(
        &self,
        conn: &mut PgConnection,
        reservations: &[&Reservation],
    ) -> QueryResult<HashSet<BudgetKey>> {
        let mut leases: Vec<(&BudgetKey, Uuid)> =
            reservations.iter().map(|r| (r.key(), r.lease())).collect();
        leases.sort();
        leases.dedup();
        if leases.is_empty() {
            return Ok(HashSet::new());
        }
        Ok(store::hold(conn, self.inner.holder, &leases)?
            .into_iter()
            .collect())
    }

    /// For an exact decision in the caller's transaction, before it locks
    /// any lease: locks the budgets' rows (creating them) and returns what
    /// their leases may still spend (absent = nothing).
    pub fn lock_exact(
        conn: &mut PgConnection,
        keys: &[(BudgetKey, DateTime<Utc>)],
    ) -> QueryResult<HashMap<BudgetKey, i64>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let mut sorted: Vec<(&BudgetKey, DateTime<Utc>)> =
            keys.iter().map(|(k, e)| (k, *e)).collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        sorted.dedup_by(|a, b| a.0 == b.0);
        store::lock_budgets(conn, &sorted)?;
        let only: Vec<&BudgetKey> = sorted.iter().map(|(k, _)| *k).collect();
        Ok(store::outstanding(conn, &only)?.into_iter().collect())
    }

    /// One renewal round (see the module doc).
    pub fn renew(&self, conn: &mut PgConnection) -> QueryResult<()> {
        let (mut release, mut renew) = (Vec::new(), Vec::new());
        let idle = Duration::from_secs(self.inner.lease_secs);
        {
            let mut state = lock(&self.inner.state);
            state.retain(|key, s| match s {
                State::Closed { touched, .. } => touched.elapsed() < CLOSED_MEMORY,
                State::Held(h) if h.reserved == 0 && (h.lost || h.last_used.elapsed() >= idle) => {
                    release.push((key.clone(), h.lease));
                    false
                }
                State::Held(h) => {
                    if !h.lost {
                        renew.push((key.clone(), h.lease, h.spent));
                    }
                    true
                }
            });
            let mut granting = lock(&self.inner.granting);
            granting.retain(|k, g| Arc::strong_count(g) > 1 || state.contains_key(k));
        }
        let release_ref: Vec<(&BudgetKey, Uuid)> = release.iter().map(|(k, l)| (k, *l)).collect();
        store::release(conn, self.inner.holder, &release_ref)?;
        renew.sort();
        let renew_ref: Vec<(&BudgetKey, Uuid, i64)> =
            renew.iter().map(|(k, l, s)| (k, *l, *s)).collect();
        let renewed: HashSet<BudgetKey> =
            store::renew(conn, self.inner.holder, &renew_ref, self.inner.lease_secs)?
                .into_iter()
                .collect();
        let mut state = lock(&self.inner.state);
        for (key, lease, _) in &renew {
            if renewed.contains(key) {
                continue;
            }
            if let Some(State::Held(h)) = state.get_mut(key) {
                if h.lease == *lease {
                    h.lost = true;
                    super::decision("lapsed");
                }
            }
        }
        Ok(())
    }

    /// Gives every lease back (at shutdown, once nothing spends any more).
    pub fn release_all(&self, conn: &mut PgConnection) -> QueryResult<usize> {
        lock(&self.inner.state).clear();
        store::release_all(conn, self.inner.holder)
    }

    /// Deletes budgets (and leases) past their period, a bounded number.
    pub fn purge(conn: &mut PgConnection) -> QueryResult<usize> {
        store::purge(conn, 1000)
    }

    /// Renews every third of a lease; purges old budgets every minute.
    pub fn spawn_renewer(&self, pool: crate::db::PgPool) -> tokio::task::JoinHandle<()> {
        let budgets = self.clone();
        let period =
            (Duration::from_secs(self.inner.lease_secs) / 3).max(Duration::from_millis(100));
        let mut last_purge = Instant::now();
        crate::db::every(period, "budget lease renewal failed", move || {
            let budgets = budgets.clone();
            let purge = last_purge.elapsed() >= Duration::from_secs(60);
            if purge {
                last_purge = Instant::now();
            }
            let pool = pool.clone();
            async move {
                crate::db::run(&pool, move |conn| {
                    budgets.renew(conn)?;
                    if purge {
                        Budgets::purge(conn)?;
                    }
                    Ok(())
                })
                .await
            }
        })
    }
}
