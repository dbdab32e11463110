//! `emails_per_second` in the worker: cluster-wide when the process has
//! leased budgets ([`Pacer::with_rates`]: a budget per tenant and second,
//! `crate::cluster::rate`), else a governor limiter per tenant enforcing
//! `limit / limits.nodes`. A throttled message is not waited for while holding its lease: it goes back
//! to the queue with `next_attempt_at` at its turn, and the tenant is left
//! out of claims until then, so other tenants' mail flows meanwhile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

struct Entry {
    per_second: u32,
    limiter: DefaultDirectRateLimiter,
    /// Messages already given a later turn, so each gets its own slot.
    queued_ahead: u32,
    until: Option<DateTime<Utc>>,
}

pub struct Pacer {
    nodes: u32,
    entries: Mutex<HashMap<Uuid, Entry>>,
    rates: Option<crate::cluster::rate::Rates>,
    /// Cluster-wide pacing: per tenant, messages already given a later
    /// turn in the current second, and until when it has no capacity.
    shared: Mutex<HashMap<Uuid, (u32, DateTime<Utc>)>>,
}

impl Pacer {
    pub fn new(nodes: u32) -> Self {
        Self {
            nodes: nodes.max(1),
            entries: Mutex::new(HashMap::new()),
            rates: None,
            shared: Mutex::new(HashMap::new()),
        }
    }

    /// Paces on the cluster's leased budgets instead of per node.
    pub fn with_rates(mut self, rates: Option<crate::cluster::rate::Rates>) -> Self {
        self.rates = rates;
        self
    }

    /// `None` when the message may go now; otherwise the time of its turn:
    /// cluster-wide when the pacer has budgets, else [`Pacer::admit`].
    pub async fn pace(&self, tenant: Uuid, per_second: Option<i32>) -> Option<DateTime<Utc>> {
        let Some(rates) = &self.rates else {
            return self.admit(tenant, per_second);
        };
        let rate = u32::try_from(per_second?).ok().filter(|r| *r > 0)?;
        let a = rates
            .admit(tenant, "emails_per_second", i64::from(rate), 1)
            .await;
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let now = Utc::now();
        if a.admitted {
            shared.remove(&tenant);
            return None;
        }
        // The window (one second) is spent everywhere: the next second,
        // later messages spread over it.
        let until = now
            + chrono::Duration::milliseconds(
                (1000 - now.timestamp_subsec_millis().min(999)).into(),
            );
        let ahead = match shared.get(&tenant) {
            Some((n, u)) if *u > now => *n,
            _ => 0,
        };
        shared.insert(tenant, (ahead.saturating_add(1), until));
        let slot = Duration::from_secs(1) / rate;
        Some(
            until
                + chrono::Duration::from_std(slot * ahead).unwrap_or(chrono::Duration::seconds(1)),
        )
    }

    /// `None` when the message may go now; otherwise the time of its turn.
    pub fn admit(&self, tenant: Uuid, per_second: Option<i32>) -> Option<DateTime<Utc>> {
        let rate = u32::try_from(per_second?).ok().filter(|r| *r > 0)?;
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let quota = super::per_node(rate, self.nodes);
        let entry = map
            .entry(tenant)
            .and_modify(|e| {
                if e.per_second != rate {
                    *e = new_entry(rate, quota);
                }
            })
            .or_insert_with(|| new_entry(rate, quota));
        let now = Utc::now();
        match entry.limiter.check() {
            Ok(()) => {
                entry.queued_ahead = 0;
                entry.until = None;
                None
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let slot = Duration::from_secs(1) / quota.get();
                let turn = now
                    + chrono::Duration::from_std(wait + slot * entry.queued_ahead)
                        .unwrap_or(chrono::Duration::seconds(1));
                entry.queued_ahead = entry.queued_ahead.saturating_add(1);
                entry.until = Some(
                    now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(1)),
                );
                Some(turn)
            }
        }
    }

    /// Tenants with no capacity right now: claims skip them.
    pub fn throttled(&self) -> Vec<Uuid> {
        let now = Utc::now();
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|(_, e)| e.until.is_some_and(|u| u > now))
            .map(|(id, _)| *id)
            .chain(
                shared
                    .iter()
                    .filter(|(_, (_, u))| *u > now)
                    .map(|(id, _)| *id),
            )
            .collect()
    }
}

fn new_entry(rate: u32, quota: std::num::NonZeroU32) -> Entry {
    Entry {
        per_second: rate,
        limiter: RateLimiter::direct(Quota::per_second(quota)),
        queued_ahead: 0,
        until: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_one_tenant_and_spreads_turns() {
        let p = Pacer::new(1);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(p.admit(a, Some(1)).is_none());
        let t1 = p.admit(a, Some(1)).unwrap();
        let t2 = p.admit(a, Some(1)).unwrap();
        assert!(t2 > t1, "later messages get later turns");
        assert_eq!(p.throttled(), vec![a]);
        assert!(
            p.admit(b, Some(1)).is_none(),
            "another tenant is not affected"
        );
        assert!(p.admit(b, None).is_none(), "no limit");
    }
}
