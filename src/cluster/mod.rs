//! What the nodes of one installation share through Postgres (DESIGN §15):
//! leased budgets (`budget`, SQL in `store`). The daily quota is the first
//! user (`crate::limits::quota`). The node registry (`node`, `routes`):
//! which processes are up; a gone node's leases return to the others.
//! Cluster-wide rates on window budgets (`rate`); cluster-wide concurrency
//! (held slots, e.g. an MX site's connections) on slot budgets (`slots`).

pub mod budget;
pub mod failures;
mod grant;
mod lease;
pub mod node;
pub mod rate;
pub mod routes;
pub mod slots;
mod store;

use std::sync::OnceLock;

use prometheus::{IntCounterVec, Opts};
use serde::Deserialize;

pub use budget::{BudgetKey, Budgets, GrantRequest, Granted, Reservation, Reserve};

/// `cluster.*`. Validated by [`ClusterSettings::validate`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// How long a lease lives without renewal: a dead node's unspent share
    /// returns to the others after at most this long. Renewed every third.
    pub lease_secs: u64,
    /// A node that has not heartbeated for this long is `gone` and its
    /// leases are reclaimed by the others. Heartbeats every third.
    #[serde(default = "default_node_timeout")]
    pub node_timeout_secs: u64,
}

fn default_node_timeout() -> u64 {
    15
}

impl ClusterSettings {
    /// `Err((key, why))` for the first bad value.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if !(1..=3600).contains(&self.lease_secs) {
            return Err(("cluster.lease_secs", "must be between 1 and 3600"));
        }
        if !(1..=3600).contains(&self.node_timeout_secs) {
            return Err(("cluster.node_timeout_secs", "must be between 1 and 3600"));
        }
        Ok(())
    }
}

/// Counts what grants and renewals decided: `granted`, `closed` (a budget
/// reached its boundary), `lapsed` (a lease found gone at renewal).
fn decision(what: &'static str) {
    static DECISIONS: OnceLock<Option<IntCounterVec>> = OnceLock::new();
    let counter = DECISIONS.get_or_init(|| {
        let c = IntCounterVec::new(
            Opts::new(
                "budget_decisions_total",
                "Leased budgets: shares granted, budgets closed at their boundary, leases lapsed",
            ),
            &["decision"],
        )
        .ok()?;
        crate::metrics::register(Box::new(c.clone()));
        Some(c)
    });
    if let Some(c) = counter {
        c.with_label_values(&[what]).inc();
    }
}
