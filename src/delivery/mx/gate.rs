//! A site's connection slots, handed out round-robin by tenant: a tenant
//! whose burst fills a slow site's queue does not make another tenant's mail
//! wait behind all of it (the queue's claim fairness, carried into the
//! site). Waiters that give up (their `max_wait` ran out) are skipped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use uuid::Uuid;

#[derive(Default)]
struct State {
    free: usize,
    waiting: HashMap<Uuid, VecDeque<oneshot::Sender<()>>>,
    /// Tenants with waiters, in turn order.
    turns: VecDeque<Uuid>,
}

pub struct Gate {
    state: Mutex<State>,
}

/// A held slot; freed (to the next tenant in turn) when dropped.
pub struct Slot {
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// A turn in the queue; dropped before its slot was taken (the wait was
/// cancelled just as the slot arrived), it passes the slot on.
struct Waiting {
    rx: oneshot::Receiver<()>,
    gate: Arc<Gate>,
    done: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.done {
            self.rx.close();
            if self.rx.try_recv().is_ok() {
                self.gate.release();
            }
        }
    }
}

impl Gate {
    pub fn new(slots: usize) -> Arc<Gate> {
        Arc::new(Gate {
            state: Mutex::new(State {
                free: slots,
                ..State::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot (cancel-safe: dropping the future gives up the turn).
    pub async fn acquire(self: &Arc<Self>, tenant: Uuid) -> Slot {
        let rx = {
            let mut st = self.lock();
            if st.free > 0 && st.turns.is_empty() {
                st.free -= 1;
                return Slot { gate: self.clone() };
            }
            let (tx, rx) = oneshot::channel();
            let queue = st.waiting.entry(tenant).or_default();
            queue.push_back(tx);
            if queue.len() == 1 {
                st.turns.push_back(tenant);
            }
            rx
        };
        let mut waiting = Waiting {
            rx,
            gate: self.clone(),
            done: false,
        };
        // Sent by `release` (or the sender dropped with the gate): ours.
        let _ = (&mut waiting.rx).await;
        waiting.done = true;
        Slot { gate: self.clone() }
    }

    /// Hands the slot to the next live waiter of the next tenant in turn.
    fn release(&self) {
        let mut st = self.lock();
        while let Some(tenant) = st.turns.pop_front() {
            let Some(queue) = st.waiting.get_mut(&tenant) else {
                continue;
            };
            let mut handed = false;
            while let Some(tx) = queue.pop_front() {
                if tx.send(()).is_ok() {
                    handed = true;
                    break;
                }
            }
            if queue.is_empty() {
                st.waiting.remove(&tenant);
            } else {
                st.turns.push_back(tenant);
            }
            if handed {
                return;
            }
        }
        st.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn slots_go_round_robin_by_tenant() {
        let gate = Gate::new(1);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let held = gate.acquire(a).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, t) in [a, a, a, b].into_iter().enumerate() {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = gate.acquire(t).await;
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        // b's one message went second, not behind a's three.
        assert_eq!(*order.lock().unwrap(), vec![0, 3, 1, 2]);
    }

    #[tokio::test]
    async fn a_waiter_that_gave_up_is_skipped() {
        let gate = Gate::new(1);
        let held = gate.acquire(Uuid::new_v4()).await;
        let quitter =
            tokio::time::timeout(Duration::from_millis(10), gate.acquire(Uuid::new_v4())).await;
        assert!(quitter.is_err());
        drop(held);
        let again =
            tokio::time::timeout(Duration::from_millis(100), gate.acquire(Uuid::new_v4())).await;
        assert!(again.is_ok(), "the freed slot was not lost to the quitter");
    }
}
