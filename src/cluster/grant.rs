//! One grant transaction: the arithmetic ([`decide`]) and what it writes
//! (rules in `budget.rs`).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::PgConnection;
use uuid::Uuid;

use super::budget::BudgetKey;
use super::lease::Reservation;
use super::store;

/// Reads, inside a grant's transaction and after its locks, what each
/// budget has spent durably (absent = nothing).
pub type Used<'a> =
    dyn FnMut(&mut PgConnection, &[BudgetKey]) -> QueryResult<HashMap<BudgetKey, i64>> + 'a;

/// One ask for units of a budget.
pub struct GrantRequest {
    pub key: BudgetKey,
    pub limit: i64,
    pub need: i64,
    /// The smallest share worth a lease (the owner's setting).
    pub chunk: i64,
    /// When the budget's rows may be deleted (after its period).
    pub ends_at: DateTime<Utc>,
}

/// What [`Budgets::grant`] answered to one request.
pub enum Granted {
    Held(Reservation),
    /// Decide exactly (the budget closed, or the lease went meanwhile).
    Locked,
}

/// The arithmetic of one grant (all counts in the budget's units).
#[derive(Clone, Copy, Debug)]
pub struct Standing {
    pub limit: i64,
    /// Spent and counted durably.
    pub used: i64,
    /// Other holders' live leases: Σ (granted - spent as reported).
    pub others: i64,
    /// This holder's lease: granted - spent.
    pub own: i64,
    pub need: i64,
    pub chunk: i64,
    /// The share the holder would like (≥ chunk; grows under steady use).
    pub want: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Grow the holder's lease by this much.
    Grant(i64),
    /// Revoke every lease; decide exactly from now on.
    Close,
}

/// A grant of at least `max(need, chunk)` when that much is free, up to
/// `want` but never more than half of what is free (so other holders still
/// find shares); otherwise the budget closes.
pub fn decide(s: &Standing) -> Decision {
    let free = s.limit - s.used - s.others - s.own;
    let floor = s.need.max(s.chunk).max(1);
    if free >= floor {
        Decision::Grant(floor.max(s.want.min(free / 2)))
    } else {
        Decision::Close
    }
}

/// Adaptive grants grow to at most this many chunks.
const MAX_CHUNKS: i64 = 16;
/// What a grant did to one budget, applied to memory after its COMMIT.
pub(super) enum Outcome {
    Granted { lease: Uuid, add: i64, extend: bool },
    Closed,
}

/// The holder's lease as memory had it when the grant began.
#[derive(Clone, Copy)]
pub(super) struct Mine {
    pub(super) lease: Uuid,
    pub(super) spent: i64,
    pub(super) size: i64,
    /// How long the last grant lasted, in leases: grants grow under use.
    pub(super) age: u32,
}

pub(super) struct Ask {
    pub(super) limit: i64,
    pub(super) need: i64,
    pub(super) chunk: i64,
    pub(super) ends_at: DateTime<Utc>,
}

/// The body of a grant transaction: locks, counts, decides and writes.
pub(super) fn run(
    c: &mut PgConnection,
    holder: Uuid,
    lease_secs: u64,
    asks: &BTreeMap<BudgetKey, Ask>,
    mine: &HashMap<BudgetKey, Mine>,
    used: &mut Used<'_>,
) -> QueryResult<Vec<(BudgetKey, Outcome)>> {
    let locks: Vec<(&BudgetKey, DateTime<Utc>)> =
        asks.iter().map(|(k, a)| (k, a.ends_at)).collect();
    let rows = store::lock_budgets(c, &locks)?;
    let keys: Vec<&BudgetKey> = asks.keys().collect();
    let leases = store::lock_leases(c, &keys)?;
    let owned: Vec<BudgetKey> = asks.keys().cloned().collect();
    let used = used(c, &owned)?;
    let mut deletes: Vec<(&BudgetKey, Uuid)> = Vec::new();
    let mut puts = Vec::new();
    let mut out = Vec::new();
    for (key, ask) in asks {
        let of = |t: Uuid, b: &str| t == key.tenant_id && b == key.name;
        let closed = rows
            .iter()
            .find(|r| of(r.tenant_id, &r.budget))
            .and_then(|r| r.closed_at_limit);
        if closed.is_some_and(|at| ask.limit <= at) {
            out.push((key.clone(), Outcome::Closed));
            continue;
        }
        let mine = mine.get(key);
        let (mut others, mut own, mut extend) = (0, 0, false);
        let mut gone = Vec::new();
        let mut all = Vec::new();
        for r in leases.iter().filter(|r| of(r.tenant_id, &r.budget)) {
            all.push((key, r.holder));
            let outstanding = (r.granted - r.spent).max(0);
            if r.holder == holder {
                match mine {
                    Some(m) if m.lease == r.lease && !r.expired => {
                        own = (r.granted - m.spent).max(0);
                        extend = true;
                    }
                    // Not the lease memory holds: its commits are all in
                    // `used`, and no new one can use it once deleted.
                    _ => gone.push((key, r.holder)),
                }
            } else if r.expired {
                gone.push((key, r.holder));
            } else {
                others += outstanding;
            }
        }
        // Used up within a lease: twice as much next time; within four:
        // as much again; else back to one chunk.
        let want = match mine {
            Some(m) if extend && m.age < 1 => (m.size * 2).min(ask.chunk * MAX_CHUNKS),
            Some(m) if extend && m.age < 4 => m.size.clamp(ask.chunk, ask.chunk * MAX_CHUNKS),
            _ => ask.chunk,
        };
        let standing = Standing {
            limit: ask.limit,
            used: used.get(key).copied().unwrap_or(0),
            others,
            own,
            need: ask.need,
            chunk: ask.chunk,
            want,
        };
        match decide(&standing) {
            Decision::Grant(add) => {
                deletes.extend(gone);
                if closed.is_some() {
                    store::set_closed(c, key, None)?;
                }
                let (lease, spent) = match mine {
                    Some(m) if extend => (m.lease, m.spent),
                    _ => (Uuid::new_v4(), 0),
                };
                puts.push((key, lease, extend, add, spent));
                out.push((key.clone(), Outcome::Granted { lease, add, extend }));
            }
            Decision::Close => {
                deletes.extend(all);
                store::set_closed(c, key, Some(ask.limit))?;
                out.push((key.clone(), Outcome::Closed));
            }
        }
    }
    store::delete_leases(c, &deletes)?;
    for (key, lease, extend, add, spent) in puts {
        store::put_lease(c, key, holder, lease, extend, add, spent, lease_secs)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(limit: i64, used: i64, others: i64, own: i64, need: i64) -> Standing {
        Standing {
            limit,
            used,
            others,
            own,
            need,
            chunk: 100,
            want: 100,
        }
    }

    #[test]
    fn a_chunk_is_granted_while_a_chunk_is_free() {
        assert_eq!(decide(&standing(1000, 0, 0, 0, 1)), Decision::Grant(100));
        // exactly one chunk free
        assert_eq!(
            decide(&standing(500, 200, 150, 50, 1)),
            Decision::Grant(100)
        );
        // one unit short of a chunk: the budget closes
        assert_eq!(decide(&standing(500, 201, 150, 50, 1)), Decision::Close);
    }

    #[test]
    fn others_and_own_outstanding_count_as_used() {
        assert_eq!(decide(&standing(500, 0, 450, 0, 1)), Decision::Close);
        assert_eq!(decide(&standing(500, 0, 0, 450, 1)), Decision::Close);
        assert_eq!(decide(&standing(500, 0, 200, 200, 1)), Decision::Grant(100));
    }

    #[test]
    fn a_quota_smaller_than_a_chunk_closes_at_once() {
        assert_eq!(decide(&standing(25, 0, 0, 0, 1)), Decision::Close);
    }

    #[test]
    fn a_large_need_is_granted_whole_or_closes() {
        assert_eq!(
            decide(&standing(10_000, 0, 0, 0, 500)),
            Decision::Grant(500)
        );
        assert_eq!(decide(&standing(1_000, 600, 0, 0, 500)), Decision::Close);
    }

    #[test]
    fn growth_is_capped_by_half_of_what_is_free() {
        let mut s = standing(1_000_000, 0, 0, 0, 1);
        s.want = 1600;
        assert_eq!(decide(&s), Decision::Grant(1600));
        s.limit = 1000;
        assert_eq!(decide(&s), Decision::Grant(500));
        s.limit = 150;
        // never below a chunk while a chunk is free
        assert_eq!(decide(&s), Decision::Grant(100));
    }

    #[test]
    fn a_limit_lowered_below_what_is_spent_closes() {
        assert_eq!(decide(&standing(100, 300, 0, 0, 1)), Decision::Close);
    }
}
