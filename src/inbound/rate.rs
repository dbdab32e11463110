//! Messages per tenant per minute on this node: a fixed one-minute window,
//! its map emptied when the minute turns (so it holds at most the tenants
//! that received mail this minute).

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

pub struct PerMinute {
    limit: u32,
    window: Mutex<(i64, HashMap<Uuid, u32>)>,
}

fn minute() -> i64 {
    chrono::Utc::now().timestamp() / 60
}

impl PerMinute {
    pub fn new(limit: u32) -> PerMinute {
        PerMinute {
            limit,
            window: Mutex::new((minute(), HashMap::new())),
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

    /// Whether the tenant may receive one more message this minute.
    pub fn allows(&self, tenant: Uuid) -> bool {
        self.with(|m| m.get(&tenant).copied().unwrap_or(0) < self.limit)
    }

    /// Counts one message; false (and nothing counted) past the limit.
    pub fn take(&self, tenant: Uuid) -> bool {
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

    #[test]
    fn the_limit_holds_per_tenant() {
        let r = PerMinute::new(2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(r.take(a) && r.take(a));
        assert!(!r.allows(a) && !r.take(a));
        assert!(r.allows(b) && r.take(b));
    }
}
