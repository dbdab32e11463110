//! `inbound.messages_per_tenant_per_minute`. In `serve` and `worker`
//! processes cluster-wide (issue 27): a window budget per tenant and
//! calendar minute (`inbound_messages_per_minute:60:<minute>`) whose shares
//! the nodes lease and spend in memory, as a tenant's
//! `requests_per_minute` (`crate::cluster::rate`): a DATA asks Postgres only
//! when the node's share is spent, and an RCPT is refused in memory once
//! this node learned the minute is spent. Without budgets (a listener
//! started on its own, e.g. in tests) a fixed one-minute window per node,
//! its map emptied when the minute turns (so it holds at most the tenants
//! that received mail this minute).

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::cluster::rate::Rates;

/// The budget's name (its window and minute are appended).
pub const BUDGET: &str = "inbound_messages_per_minute";

pub struct PerMinute {
    limit: u32,
    window: Mutex<(i64, HashMap<Uuid, u32>)>,
    /// The cluster's budgets; `None`: counted on this node only.
    shared: Option<Rates>,
}

fn minute() -> i64 {
    chrono::Utc::now().timestamp() / 60
}

impl PerMinute {
    /// Counted on this node only.
    pub fn new(limit: u32) -> PerMinute {
        PerMinute {
            limit,
            window: Mutex::new((minute(), HashMap::new())),
            shared: None,
        }
    }

    /// Counted across the nodes on `rates` (when given).
    pub fn shared(limit: u32, rates: Option<Rates>) -> PerMinute {
        PerMinute {
            shared: rates,
            ..PerMinute::new(limit)
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Uuid, u32>) -> T) -> T {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = minute();
        if w.0 != now {
            *w = (now, HashMap::new());
        }
        f(&mut w.1)
    }

    /// Whether the tenant may receive one more message this minute, as far
    /// as this node knows (no query).
    pub fn allows(&self, tenant: Uuid) -> bool {
        match &self.shared {
            Some(rates) => rates
                .closed(tenant, BUDGET, i64::from(self.limit), 60)
                .is_none(),
            None => self.with(|m| m.get(&tenant).copied().unwrap_or(0) < self.limit),
        }
    }

    /// Counts one message; false (and nothing counted) past the limit.
    pub async fn take(&self, tenant: Uuid) -> bool {
        if let Some(rates) = &self.shared {
            return rates
                .admit(tenant, BUDGET, i64::from(self.limit), 60)
                .await
                .admitted;
        }
        self.with(|m| {
            let n = m.entry(tenant).or_insert(0);
            if *n >= self.limit {
                return false;
            }
            *n += 1;
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_limit_holds_per_tenant() {
        let r = PerMinute::new(2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(r.take(a).await && r.take(a).await);
        assert!(!r.allows(a) && !r.take(a).await);
        assert!(r.allows(b) && r.take(b).await);
    }
}
