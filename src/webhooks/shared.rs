//! Webhook delivery concurrency across the nodes (issue 27): each POST holds
//! a slot of its endpoint (`webhook_endpoint:<id>`, at most
//! `webhooks.max_in_flight_per_endpoint`) and one of its owner
//! (`webhook_owner`, at most `webhooks.max_in_flight_per_tenant`), both slot
//! budgets of the owner (`cluster::slots`; the platform is the nil tenant).
//! Each dispatcher still caps what it claims by its own counts; the slots
//! make the caps hold across every `serve`/`worker` process.
//!
//! A claimed delivery whose slot is refused (other nodes hold them all) is
//! given back at once, unattempted: its attempt count and due time are
//! restored, so another node (the one holding the slots) takes it next.
//! The refused endpoint (or owner) is left out of this node's claims for
//! [`BACK_OFF`], so a busy endpoint costs a node at most one claim and one
//! give-back per endpoint per `BACK_OFF`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::cluster::rate::Rates;
use crate::cluster::slots::{Slot, Slots};

/// How long a node leaves out an endpoint or owner whose slot was refused.
pub const BACK_OFF: Duration = Duration::from_millis(500);

/// Endpoints and owners this node found at their cluster-wide cap, and
/// until when it leaves them out of its claims. Bounded: entries expire and
/// are dropped at each look, and there are at most as many as deliveries
/// claimed in the last [`BACK_OFF`].
#[derive(Default)]
struct Refused {
    endpoints: HashMap<Uuid, Instant>,
    owners: HashMap<Uuid, Instant>,
}

/// This node's side of the shared webhook caps.
#[derive(Clone)]
pub struct SharedFlight {
    slots: Slots,
    refused: Arc<Mutex<Refused>>,
}

/// The two slots one POST holds; given back when dropped.
#[derive(Debug)]
pub struct Held {
    _endpoint: Slot,
    _owner: Slot,
}

fn lock(m: &Mutex<Refused>) -> std::sync::MutexGuard<'_, Refused> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SharedFlight {
    pub fn new(rates: &Rates, lease_secs: u64) -> SharedFlight {
        SharedFlight {
            slots: rates.slots(lease_secs),
            refused: Arc::default(),
        }
    }

    pub fn spawn_renewer(&self) -> tokio::task::JoinHandle<()> {
        self.slots.spawn_renewer()
    }

    /// The slots for one POST to `endpoint` of `owner`, or `None` (the
    /// cluster holds the endpoint's or the owner's cap; the one refused is
    /// left out of claims for a while).
    pub async fn hold(
        &self,
        endpoint: Uuid,
        owner: Uuid,
        per_endpoint: i32,
        per_owner: i32,
    ) -> Option<Held> {
        let name = format!("webhook_endpoint:{endpoint}");
        let Some(e) = self
            .slots
            .take_for(owner, &name, i64::from(per_endpoint))
            .await
        else {
            lock(&self.refused)
                .endpoints
                .insert(endpoint, Instant::now() + BACK_OFF);
            return None;
        };
        let Some(o) = self
            .slots
            .take_for(owner, "webhook_owner", i64::from(per_owner))
            .await
        else {
            lock(&self.refused)
                .owners
                .insert(owner, Instant::now() + BACK_OFF);
            return None;
        };
        Some(Held {
            _endpoint: e,
            _owner: o,
        })
    }

    /// Endpoints and owners to leave out of the next claim.
    pub fn refused(&self) -> (Vec<Uuid>, Vec<Uuid>) {
        let now = Instant::now();
        let mut r = lock(&self.refused);
        r.endpoints.retain(|_, until| *until > now);
        r.owners.retain(|_, until| *until > now);
        (
            r.endpoints.keys().copied().collect(),
            r.owners.keys().copied().collect(),
        )
    }
}

/// Adds `refused` to a claim's busy list at the cap, so the claim skips it.
pub fn at_cap(busy: &mut Vec<(Uuid, i32)>, refused: Vec<Uuid>, cap: i32) {
    for id in refused {
        match busy.iter_mut().find(|(b, _)| *b == id) {
            Some((_, n)) => *n = (*n).max(cap),
            None => busy.push((id, cap)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_endpoints_join_the_busy_list_at_the_cap() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut busy = vec![(a, 1)];
        at_cap(&mut busy, vec![a, b], 2);
        assert_eq!(busy, vec![(a, 2), (b, 2)]);
    }
}
