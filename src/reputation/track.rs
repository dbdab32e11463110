//! What recorded outcomes add to the figures (recipients): the two hooks
//! the outcome paths call in their transactions, each one upsert.

use std::sync::atomic::{AtomicBool, Ordering};

use diesel::PgConnection;
use diesel::QueryResult;

use super::model::{self, Delta};
use crate::queue::record::{Outcome, Resolution};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns tracking (these hooks) and the send paths' paused check off or on
/// for this process. Always on in the product; `benches/load.rs` compares
/// throughput with and without in one run.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Delivery outcomes (`queue::record`): a recipient delivered counts as
/// delivered, one that bounced hard (it is suppressed) as hard bounced.
/// Messages without recipient rows count once, by their resolution.
pub fn outcomes(conn: &mut PgConnection, recorded: &[&Outcome]) -> QueryResult<()> {
    if !enabled() {
        return Ok(());
    }
    let deltas: Vec<Delta> = recorded
        .iter()
        .map(|o| {
            let mut d = Delta {
                tenant_id: o.lease.tenant_id,
                email_id: o.lease.email_id,
                ..Delta::default()
            };
            if o.recipients.is_empty() {
                match o.resolution {
                    Resolution::Delivered { .. } => d.delivered = 1,
                    Resolution::Bounced { .. } => d.hard_bounced = 1,
                    _ => {}
                }
            }
            for r in &o.recipients {
                match r.update.status {
                    "delivered" => d.delivered += 1,
                    "bounced" if r.suppress.is_some() => d.hard_bounced += 1,
                    _ => {}
                }
            }
            d
        })
        .collect();
    model::add(conn, &deltas)
}

/// A report applied by `bounces::apply` to one recipient whose state was
/// `before`: a hard bounce of a delivered recipient moves it from delivered
/// to hard bounced; a complaint counts once.
pub fn report(
    conn: &mut PgConnection,
    tenant_id: uuid::Uuid,
    email_id: uuid::Uuid,
    before: &str,
    hard_bounced: bool,
    complained: bool,
) -> QueryResult<()> {
    if !enabled() {
        return Ok(());
    }
    let mut d = Delta {
        tenant_id,
        email_id,
        ..Delta::default()
    };
    if hard_bounced {
        d.hard_bounced = 1;
        if before == "delivered" {
            d.delivered = -1;
        }
    }
    if complained {
        d.complained = 1;
    }
    model::add(conn, &[d])
}
