//! A holder's leases in memory: what each may still spend, and the
//! reservations taken from them for commits in flight.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use uuid::Uuid;

use super::budget::{BudgetKey, Inner};

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) enum State {
    Held(Held),
    Closed { limit: i64, touched: Instant },
}

pub(super) struct Held {
    pub(super) lease: Uuid,
    /// The budget's limit when granted: another limit needs a new grant.
    pub(super) limit: i64,
    pub(super) granted: i64,
    /// Committed spending (what renewals report).
    pub(super) spent: i64,
    /// Reserved for commits in flight.
    pub(super) reserved: i64,
    /// Gone, lapsed, or a commit's outcome is unknown: no more reservations.
    pub(super) lost: bool,
    /// When units were last reserved: a lease unused for a whole lease
    /// period is released.
    pub(super) last_used: Instant,
    pub(super) size: i64,
    pub(super) granted_at: Instant,
}

impl Held {
    pub(super) fn free(&self) -> i64 {
        self.granted - self.spent - self.reserved
    }
}

/// What [`Budgets::reserve`] found.
pub enum Reserve {
    Held(Reservation),
    /// The budget is closed at this limit: decide exactly.
    Closed,
    /// No lease covers it: ask for a grant.
    Grant,
}

/// Units taken from a lease for one commit. Dropped, they return to it.
pub struct Reservation {
    inner: Arc<Inner>,
    key: BudgetKey,
    lease: Uuid,
    n: i64,
    settled: bool,
}

impl Reservation {
    pub(super) fn new(inner: Arc<Inner>, key: BudgetKey, lease: Uuid, n: i64) -> Reservation {
        Reservation {
            inner,
            key,
            lease,
            n,
            settled: false,
        }
    }

    pub(super) fn lease(&self) -> Uuid {
        self.lease
    }

    pub fn key(&self) -> &BudgetKey {
        &self.key
    }

    /// The commit that used these units is durable.
    pub fn spend(mut self) {
        self.settle(|h, n| {
            h.reserved -= n;
            h.spent += n;
        });
    }

    /// The lease is gone, or the commit's outcome is unknown: the lease
    /// takes no more reservations and is released by the next renewal.
    pub fn lose(mut self) {
        self.settle(|h, n| {
            h.reserved -= n;
            h.lost = true;
        });
    }

    fn settle(&mut self, f: impl FnOnce(&mut Held, i64)) {
        if self.settled {
            return;
        }
        self.settled = true;
        let mut state = lock(&self.inner.state);
        if let Some(State::Held(h)) = state.get_mut(&self.key) {
            if h.lease == self.lease {
                f(h, self.n);
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.settle(|h, n| h.reserved -= n);
    }
}
