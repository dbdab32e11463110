//! A byte budget shared by the sessions of a listener (or of several: the
//! two submission listeners share one). A message's DATA is read only once
//! its worst case, `max_message_bytes`, is reserved from the budget, and the
//! reservation is held until the handler is done with the message, so the
//! messages held in memory at once never exceed the budget, however many
//! sessions are open.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget units are KiB (a semaphore's permits are counted in `u32` per
/// acquisition).
const UNIT: usize = 1024;

#[derive(Clone, Debug)]
pub struct DataBudget {
    permits: Arc<Semaphore>,
    per_message: u32,
}

impl DataBudget {
    /// `total_bytes` shared, `max_message_bytes` reserved per message (the
    /// configuration checks the first is at least the second).
    pub fn new(total_bytes: usize, max_message_bytes: usize) -> DataBudget {
        let per_message = max_message_bytes.div_ceil(UNIT).max(1);
        let total = (total_bytes / UNIT).max(per_message);
        DataBudget {
            permits: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            per_message: u32::try_from(per_message).unwrap_or(u32::MAX),
        }
    }

    /// A message's reservation, or `None` when none frees up within `wait`.
    pub(super) async fn reserve(&self, wait: Duration) -> Option<OwnedSemaphorePermit> {
        let permits = self.permits.clone();
        let acquire = permits.acquire_many_owned(self.per_message);
        tokio::time::timeout(wait, acquire).await.ok()?.ok()
    }

    /// Messages that fit in what is left of the budget.
    #[cfg(test)]
    fn messages(&self) -> usize {
        self.permits.available_permits() / self.per_message as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[tokio::test]
    async fn holds_as_many_messages_as_fit_and_frees_them_on_drop() {
        let b = DataBudget::new(3 * MIB, MIB);
        assert_eq!(b.messages(), 3);
        let wait = Duration::from_millis(50);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(b.reserve(wait).await.expect("fits"));
        }
        assert_eq!(b.messages(), 0);
        assert!(
            b.reserve(wait).await.is_none(),
            "a fourth waits, then gives up"
        );
        held.pop();
        assert!(b.reserve(wait).await.is_some(), "one freed");
    }

    #[tokio::test]
    async fn a_budget_below_one_message_still_holds_one() {
        let b = DataBudget::new(10, MIB + 1);
        assert_eq!(b.messages(), 1);
        let _one = b.reserve(Duration::from_millis(50)).await.expect("one");
        assert!(b.reserve(Duration::from_millis(50)).await.is_none());
    }
}
