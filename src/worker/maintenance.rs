//! Lease heartbeat and reclaim (on the lease pool), and queue maintenance.

use std::collections::HashSet;
use std::time::Duration;

use uuid::Uuid;

use super::recorder::record_with_retry;
use super::Ctx;
use crate::db;
use crate::queue::model::{self as queue_db, Lease};
use crate::queue::record::{Outcome, Resolution};

/// Renews every lease this worker holds, every third of the lease, so a send
/// longer than the lease is never taken over while its worker lives, and a
/// dead worker's leases expire within one lease.
pub async fn heartbeat(ctx: Ctx) {
    let lease = ctx.settings.delivery.lease_secs as f64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64((lease / 3.0).max(0.5)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let leases = ctx.inflight.leases();
        if leases.is_empty() {
            continue;
        }
        let r = {
            let leases = leases.clone();
            db::run(&ctx.leases, move |conn| {
                Ok(queue_db::heartbeat(conn, &leases, lease)?)
            })
            .await
        };
        match r {
            Ok(held) => {
                // Not held any more: taken over or reclaimed, unless its
                // outcome was recorded meanwhile or is being recorded (its
                // row may be gone before the recorder lets go of it).
                let held: HashSet<(Uuid, Uuid)> = held.into_iter().collect();
                let still: HashSet<Lease> = ctx.inflight.unsettled().into_iter().collect();
                let lost = leases
                    .iter()
                    .filter(|l| still.contains(l) && !held.contains(&(l.tenant_id, l.email_id)))
                    .count();
                if lost > 0 {
                    tracing::warn!(
                        held = leases.len(),
                        lost,
                        "some leases were lost (taken over or reclaimed); their outcomes will be ignored"
                    )
                }
            }
            Err(e) => tracing::warn!(error = %e, "lease heartbeat failed"),
        }
    }
}

/// Every second, on the lease pool: expired leases become claimable (and a
/// message lost `worker.max_lost_leases` times fails).
pub async fn reclaim(ctx: Ctx) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let max_lost = i32::try_from(ctx.settings.worker.max_lost_leases).unwrap_or(i32::MAX);
    loop {
        tick.tick().await;
        let r = db::run(&ctx.leases, move |conn| {
            Ok(queue_db::reclaim_expired(conn, max_lost)?)
        })
        .await;
        let (reclaimed, lost) = match r {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "lease reclaim skipped");
                continue;
            }
        };
        if reclaimed > 0 {
            tracing::info!(reclaimed, "expired leases reclaimed");
            ctx.wake_local.send_modify(|n| *n = n.wrapping_add(1));
        }
        if !lost.is_empty() {
            tracing::error!(
                count = lost.len(),
                "messages failed: their worker lost them repeatedly"
            );
            let failed = lost
                .into_iter()
                .map(|l| Outcome {
                    lease: queue_db::Lease {
                        tenant_id: l.tenant_id,
                        email_id: l.email_id,
                        fence: l.fence,
                    },
                    attempt: l.lost,
                    recipients: Vec::new(),
                    resolution: Resolution::Failed {
                        reason: format!(
                            "worker lost it repeatedly: {} leases expired without an outcome",
                            l.lost
                        ),
                    },
                })
                .collect();
            record_with_retry(&ctx.leases, failed).await;
        }
    }
}

/// On the main pool: every 5 s, mail of suspended tenants that came back
/// from a send is held; hourly, old idempotency keys, finished webhook
/// deliveries, expired suppressions and (per `retention.*`) old message
/// content and metadata are purged.
pub async fn housekeeping(ctx: Ctx) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let log_days = ctx.settings.webhooks.log_retention_days;
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        let retention = (n % 720 == 0).then(|| ctx.settings.retention.clone());
        let r = db::run(&ctx.pool, move |conn| {
            queue_db::hold_stragglers(conn)?;
            if let Some(retention) = &retention {
                crate::emails::idempotency::purge_expired(conn)?;
                crate::webhooks::deliveries::purge_finished(conn, log_days)?;
                crate::suppressions::model::purge_expired(conn, 10_000)?;
                crate::retention::purge(conn, retention)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "maintenance skipped");
        }
    }
}
