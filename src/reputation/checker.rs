//! The decisions, every `reputation.check_secs`: each tenant with recent
//! figures (or a state other than healthy) against its effective policy.
//! One node decides at a time (a transaction-scoped advisory lock; the
//! others skip that round), and every transition is a conditional UPDATE,
//! so a tenant changes state once whatever the number of nodes.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use uuid::Uuid;

use super::gate::Gate;
use super::model;
use super::policy::{decide, Policy, ReputationSettings, Verdict};
use crate::audit::{self, Actor};
use crate::config::Settings;
use crate::db::{self, PgPool};
use crate::domain::TenantId;
use crate::error::{AppError, AppResult};

/// The advisory lock key of the decision round ("reput" in ASCII).
const LOCK_KEY: i64 = 0x0072_6570_7574;
/// The most tenants one round decides on.
pub const MAX_PER_ROUND: i64 = 50_000;

/// A state change a round made.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub tenant_id: Uuid,
    pub status: &'static str,
    pub reason: Option<String>,
}

/// One round; `None` when another node holds the round.
pub fn round(
    conn: &mut PgConnection,
    settings: &ReputationSettings,
) -> AppResult<Option<Vec<Change>>> {
    conn.transaction(|conn| {
        #[derive(QueryableByName)]
        struct Locked {
            #[diesel(sql_type = Bool)]
            locked: bool,
        }
        let l: Locked = diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS locked")
            .bind::<BigInt, _>(LOCK_KEY)
            .get_result(conn)?;
        if !l.locked {
            return Ok(None);
        }
        let mut changes = Vec::new();
        let mut by_status = [0i64; 3];
        for s in model::candidates(conn, MAX_PER_ROUND)? {
            let policy = Policy::effective(settings, s.policy.as_ref());
            let hours = i32::try_from(policy.window_hours).unwrap_or(24);
            let counts = model::window(conn, s.tenant_id, hours, s.reinstated_at)?;
            let to = match (decide(&policy, &counts), s.status.as_str()) {
                (_, "paused") => None,
                (Verdict::Pause(why), _) => Some(("paused", Some(why))),
                (Verdict::Warning(why), "healthy") => Some(("warning", Some(why))),
                (Verdict::Healthy, "warning") => Some(("healthy", None)),
                _ => None,
            };
            let mut status = s.status.clone();
            if let Some((to, why)) = to {
                if apply(conn, settings, s.tenant_id, to, why.as_deref())? {
                    status = to.to_string();
                    changes.push(Change {
                        tenant_id: s.tenant_id,
                        status: to,
                        reason: why,
                    });
                }
            }
            match status.as_str() {
                "warning" => by_status[1] += 1,
                "paused" => by_status[2] += 1,
                _ => by_status[0] += 1,
            }
        }
        set_gauges(by_status);
        Ok(Some(changes))
    })
}

/// One transition with its consequences, in the round's transaction.
fn apply(
    conn: &mut PgConnection,
    settings: &ReputationSettings,
    tenant: Uuid,
    to: &'static str,
    why: Option<&str>,
) -> AppResult<bool> {
    if !model::transition(conn, tenant, to, why)? {
        return Ok(false);
    }
    let event = match to {
        "paused" => {
            crate::queue::model::hold_tenant(conn, TenantId(tenant))?;
            audit::record(
                conn,
                &Actor::system(),
                "tenant.paused",
                Some(tenant),
                tenant,
                serde_json::json!({"reputation": {"to": "paused"}, "reason": why}),
            )?;
            Some("tenant.paused")
        }
        "warning" => Some("tenant.reputation_warning"),
        _ => None,
    };
    if let Some(event) = event {
        let view = super::service::of(conn, settings, tenant)?;
        let data =
            serde_json::to_value(&view).map_err(|e| AppError::internal("reputation view", e))?;
        model::enqueue_event(conn, tenant, event, &data)?;
    }
    Ok(true)
}

/// Runs the rounds until the runtime stops; this node's gate learns its own
/// pauses at once (the others within a second). Old buckets are purged
/// about hourly.
pub fn spawn(pool: PgPool, settings: Arc<Settings>, gate: Gate) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(settings.reputation.check_secs.max(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_purge: Option<Instant> = None;
        loop {
            tick.tick().await;
            let s = settings.clone();
            let r = db::run(&pool, move |conn| round(conn, &s.reputation)).await;
            match r {
                Ok(Some(changes)) => {
                    for c in changes {
                        tracing::warn!(tenant_id = %c.tenant_id, status = c.status, reason = ?c.reason, "tenant reputation changed");
                        if c.status == "paused" {
                            gate.pause(c.tenant_id, c.reason.unwrap_or_default());
                            count("paused");
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "reputation round failed"),
            }
            if last_purge.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                last_purge = Some(Instant::now());
                if let Err(e) = db::run(&pool, |conn| Ok(model::purge(conn)?)).await {
                    tracing::debug!(error = %e, "reputation purge skipped");
                }
            }
        }
    })
}

/// `reputation_changes_total{change="paused"|"reinstated"}` (no tenant label).
pub fn count(change: &'static str) {
    static C: OnceLock<Option<IntCounterVec>> = OnceLock::new();
    let c = C.get_or_init(|| {
        let c = IntCounterVec::new(
            Opts::new(
                "reputation_changes_total",
                "Tenants paused for their reputation, and reinstated",
            ),
            &["change"],
        )
        .ok()?;
        crate::metrics::register(Box::new(c.clone()));
        Some(c)
    });
    if let Some(c) = c {
        c.with_label_values(&[change]).inc();
    }
}

/// `reputation_tenants{status}`: the tenants the last round decided on, by status.
fn set_gauges(by_status: [i64; 3]) {
    static G: OnceLock<Option<IntGaugeVec>> = OnceLock::new();
    let g = G.get_or_init(|| {
        let g = IntGaugeVec::new(
            Opts::new(
                "reputation_tenants",
                "Tenants with recent figures, by reputation status (last round)",
            ),
            &["status"],
        )
        .ok()?;
        crate::metrics::register(Box::new(g.clone()));
        Some(g)
    });
    if let Some(g) = g {
        for (i, s) in ["healthy", "warning", "paused"].iter().enumerate() {
            g.with_label_values(&[s]).set(by_status[i]);
        }
    }
}
