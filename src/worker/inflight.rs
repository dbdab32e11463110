//! What this worker holds: in-flight slots (count and bytes, in all and per
//! tenant) and the leases the heartbeat renews until their outcome is
//! recorded.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::WorkerSettings;
use crate::queue::claim::Held;
use crate::queue::model::Lease;

/// What a stopped worker did with the messages it held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Sent (or failed) and recorded after the stop began.
    pub finished: usize,
    /// Not started, given back to the queue.
    pub released: usize,
}

#[derive(Default)]
struct State {
    count: usize,
    bytes: i64,
    per_tenant: HashMap<Uuid, Held>,
    /// Leases held, until their outcome is recorded.
    leases: HashMap<(Uuid, Uuid), Lease>,
    /// Leases whose outcome the recorder is writing: their rows may already
    /// be gone (committed) while they are still held here.
    recording: HashSet<(Uuid, Uuid)>,
}

pub struct Inflight {
    state: Mutex<State>,
    /// A slot was freed.
    pub freed: Notify,
    pub max_count: usize,
    pub max_bytes: i64,
    pub tenant_cap: usize,
    /// The most content bytes of one tenant in flight at once.
    pub tenant_bytes: i64,
}

/// Room for the next claim.
pub struct Room {
    pub slots: usize,
    pub bytes: i64,
    pub idle: bool,
    pub per_tenant: HashMap<Uuid, Held>,
}

impl Inflight {
    pub fn new(w: &WorkerSettings) -> Self {
        let max_count = w.concurrency.max(1);
        let tenant_cap = match w.max_inflight_per_tenant {
            0 => max_count.div_ceil(2),
            n => n.min(max_count),
        };
        let max_bytes = i64::try_from(w.max_inflight_bytes).unwrap_or(i64::MAX);
        let tenant_bytes = match w.max_tenant_inflight_bytes {
            0 => max_bytes / 2,
            n => i64::try_from(n).unwrap_or(i64::MAX).min(max_bytes),
        };
        Inflight {
            state: Mutex::new(State::default()),
            freed: Notify::new(),
            max_count,
            max_bytes,
            tenant_cap,
            tenant_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a panic mid-update of plain counters; they
        // are still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn room(&self, batch: usize) -> Room {
        let s = self.lock();
        Room {
            slots: self.max_count.saturating_sub(s.count).min(batch),
            bytes: self.max_bytes - s.bytes,
            idle: s.count == 0,
            per_tenant: s.per_tenant.clone(),
        }
    }

    pub fn free_slots(&self) -> usize {
        self.max_count.saturating_sub(self.lock().count)
    }

    pub fn is_empty(&self) -> bool {
        self.lock().count == 0
    }

    /// Takes a slot for a claimed message.
    pub fn take(&self, lease: Lease, bytes: i32, broadcast: bool) {
        let mut s = self.lock();
        let bytes = i64::from(bytes.max(0));
        s.count += 1;
        s.bytes += bytes;
        let held = s.per_tenant.entry(lease.tenant_id).or_default();
        held.count += 1;
        held.bytes += bytes;
        held.broadcast += usize::from(broadcast);
        s.leases.insert((lease.tenant_id, lease.email_id), lease);
    }

    /// The send is over and the recorder has its outcome; the lease stays
    /// held until [`Inflight::recorded`].
    pub fn release(&self, tenant: Uuid, bytes: i32, broadcast: bool) {
        {
            let bytes = i64::from(bytes.max(0));
            let mut s = self.lock();
            s.count = s.count.saturating_sub(1);
            s.bytes -= bytes;
            if let Some(held) = s.per_tenant.get_mut(&tenant) {
                held.count = held.count.saturating_sub(1);
                held.bytes -= bytes;
                held.broadcast = held.broadcast.saturating_sub(usize::from(broadcast));
                if held.count == 0 {
                    s.per_tenant.remove(&tenant);
                }
            }
        }
        self.freed.notify_one();
    }

    /// The recorder starts writing these outcomes.
    pub fn recording(&self, leases: &[Lease]) {
        let mut s = self.lock();
        for l in leases {
            if s.leases.get(&(l.tenant_id, l.email_id)) == Some(l) {
                s.recording.insert((l.tenant_id, l.email_id));
            }
        }
    }

    pub fn recorded(&self, leases: &[Lease]) {
        let mut s = self.lock();
        for l in leases {
            if s.leases.get(&(l.tenant_id, l.email_id)) == Some(l) {
                s.leases.remove(&(l.tenant_id, l.email_id));
                s.recording.remove(&(l.tenant_id, l.email_id));
            }
        }
    }

    pub fn leases(&self) -> Vec<Lease> {
        self.lock().leases.values().copied().collect()
    }

    /// The leases held whose outcome is not being written: a row missing
    /// for one of these was taken over, not recorded.
    pub fn unsettled(&self) -> Vec<Lease> {
        let s = self.lock();
        s.leases
            .iter()
            .filter(|(k, _)| !s.recording.contains(k))
            .map(|(_, l)| *l)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn settings() -> Settings {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        Settings::load_layers(&dir, Some("test"), false).expect("test settings")
    }

    #[test]
    fn a_tenants_byte_share_defaults_to_half_the_budget_and_is_bounded_by_it() {
        let mut s = settings();
        s.worker.max_inflight_bytes = 8 << 20;
        assert_eq!(s.worker.max_tenant_inflight_bytes, 0);
        assert_eq!(Inflight::new(&s.worker).tenant_bytes, 4 << 20);
        s.worker.max_tenant_inflight_bytes = 8 << 20;
        assert!(s.validate().is_ok());
        assert_eq!(Inflight::new(&s.worker).tenant_bytes, 8 << 20);
        s.worker.max_tenant_inflight_bytes = (8 << 20) + 1;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("worker.max_tenant_inflight_bytes"), "{e}");
    }

    #[test]
    fn the_lease_pool_has_at_least_one_connection() {
        let mut s = settings();
        assert_eq!(s.worker.lease_pool_size, 3);
        s.worker.lease_pool_size = 1;
        assert!(s.validate().is_ok());
        s.worker.lease_pool_size = 0;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("worker.lease_pool_size"), "{e}");
    }

    #[test]
    fn a_lease_being_recorded_is_held_but_not_unsettled() {
        let f = Inflight::new(&settings().worker);
        let lease = |fence| Lease {
            tenant_id: Uuid::nil(),
            email_id: Uuid::nil(),
            fence,
        };
        let other = Lease {
            email_id: Uuid::new_v4(),
            ..lease(1)
        };
        f.take(lease(1), 10, false);
        f.take(other, 10, false);
        // A stale fence marks nothing.
        f.recording(&[lease(2)]);
        assert_eq!(f.unsettled().len(), 2);
        f.recording(&[lease(1)]);
        assert_eq!(f.leases().len(), 2);
        assert_eq!(f.unsettled(), vec![other]);
        f.recorded(&[lease(1)]);
        assert_eq!(f.leases(), vec![other]);
        assert_eq!(f.unsettled(), vec![other]);
    }

    #[test]
    fn bytes_are_held_per_tenant_until_the_send_is_over() {
        let s = settings();
        let f = Inflight::new(&s.worker);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let lease = |tenant_id| Lease {
            tenant_id,
            email_id: Uuid::new_v4(),
            fence: 1,
        };
        f.take(lease(a), 100, true);
        f.take(lease(a), 50, false);
        f.take(lease(b), 7, false);
        let room = f.room(64);
        assert_eq!(
            room.per_tenant[&a],
            Held {
                count: 2,
                bytes: 150,
                broadcast: 1
            }
        );
        assert_eq!(
            room.per_tenant[&b],
            Held {
                count: 1,
                bytes: 7,
                broadcast: 0
            }
        );
        f.release(a, 100, true);
        f.release(a, 50, false);
        let room = f.room(64);
        assert!(!room.per_tenant.contains_key(&a));
        assert_eq!(room.bytes, f.max_bytes - 7);
    }
}
