//! Reputation reads and the reinstatement: callers resolve the actor and
//! the tenant; nothing here knows HTTP.

use diesel::prelude::*;
use uuid::Uuid;

use super::model::{self, StateRow};
use super::policy::{Policy, ReputationSettings};
use super::view::{self, ReputationView};
use crate::audit::{self, Actor};
use crate::db::pagination::{Cursor, Page, PageRequest};
use crate::db::{self};
use crate::domain::TenantId;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// The longest window the object reports besides the policy's (7 days).
pub const WEEK_HOURS: i32 = 168;

/// The reputation object of a state row.
pub fn build(
    conn: &mut PgConnection,
    settings: &ReputationSettings,
    s: StateRow,
) -> QueryResult<ReputationView> {
    let policy = Policy::effective(settings, s.policy.as_ref());
    let hours = i32::try_from(policy.window_hours).unwrap_or(24);
    let since = s.reinstated_at;
    let mut windows = vec![view::window(
        hours,
        model::window(conn, s.tenant_id, hours, since)?,
    )];
    if hours != WEEK_HOURS {
        windows.push(view::window(
            WEEK_HOURS,
            model::window(conn, s.tenant_id, WEEK_HOURS, since)?,
        ));
    }
    let domains = model::domains(conn, s.tenant_id, hours, since)?
        .into_iter()
        .map(|(name, c)| view::domain(name, c))
        .collect();
    let daily = model::daily(conn, s.tenant_id)?
        .into_iter()
        .map(|(d, c)| view::day(d, c))
        .collect();
    Ok(ReputationView {
        tenant_id: s.tenant_id,
        status: s.status,
        reason: s.reason,
        paused_at: s.paused_at,
        reinstated_at: s.reinstated_at,
        policy,
        windows,
        domains,
        daily,
    })
}

/// One live tenant's object (`NotFound` for an unknown or deleted one).
pub fn of(
    conn: &mut PgConnection,
    settings: &ReputationSettings,
    tenant: Uuid,
) -> AppResult<ReputationView> {
    let s = model::state(conn, tenant)?.ok_or(AppError::NotFound)?;
    Ok(build(conn, settings, s)?)
}

pub async fn get(state: &AppState, tenant: TenantId) -> AppResult<ReputationView> {
    let settings = state.settings.clone();
    db::run(&state.pool, move |conn| {
        of(conn, &settings.reputation, tenant.0)
    })
    .await
}

/// The most tenants the admin listing ranks (warning and paused ones).
pub const MAX_LISTED: i64 = 10_000;

fn rank(v: &ReputationView) -> Cursor {
    // Keyset over the computed order: the complaint rate in billionths
    // stands where the helper keeps a time.
    let scaled = (v.complaint_rate() * 1e9).round().clamp(0.0, 1e15) as i64;
    Cursor {
        created_at: chrono::DateTime::from_timestamp_micros(scaled).unwrap_or_default(),
        id: v.tenant_id,
    }
}

/// `GET /v1/admin/reputation`: tenants in `status` (warning or paused;
/// both when `None`), worst complaint rate first, then tenant id.
pub async fn list(
    state: &AppState,
    status: Option<String>,
    page: PageRequest,
) -> AppResult<Page<ReputationView>> {
    let settings = state.settings.clone();
    let mut views = db::run(&state.pool, move |conn| {
        let rows = model::with_status(conn, status.as_deref(), MAX_LISTED)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(build(conn, &settings.reputation, r)?);
        }
        Ok(out)
    })
    .await?;
    let key = |v: &ReputationView| {
        let c = rank(v);
        (c.created_at, c.id)
    };
    views.sort_by_key(|v| std::cmp::Reverse(key(v)));
    if let Some(after) = page.after {
        views.retain(|v| key(v) < (after.created_at, after.id));
    }
    views.truncate(usize::try_from(page.limit + 1).unwrap_or(usize::MAX));
    Ok(Page::from_rows(views, page, rank, |v| v))
}

/// The most tenants the console's tenant list names as flagged.
pub const MAX_FLAGGED: i64 = 200;

/// Tenants in `paused` (first) or `warning`, named (the console's list).
pub async fn flagged(state: &AppState) -> AppResult<Vec<model::Flagged>> {
    db::run(&state.pool, |conn| Ok(model::flagged(conn, MAX_FLAGGED)?)).await
}

/// The reinstatement on one connection (the API, the console and the CLI):
/// healthy from now (the figures count from `reinstated_at`), held mail
/// resumes unless the tenant is suspended, audited `tenant.reinstated` and
/// announced by the `tenant.reinstated` webhook. `NotFound` for an unknown
/// or deleted tenant. Nodes' gates learn it within a second (`gate`).
pub fn reinstate_on(
    conn: &mut PgConnection,
    settings: &ReputationSettings,
    actor: &Actor,
    tenant: TenantId,
    note: Option<String>,
) -> AppResult<ReputationView> {
    conn.transaction(|conn| {
        let before = model::state(conn, tenant.0)?.ok_or(AppError::NotFound)?;
        let suspended: bool = crate::db::schema::tenants::table
            .find(tenant.0)
            .select(crate::db::schema::tenants::status)
            .for_update()
            .first::<String>(conn)?
            == "suspended";
        model::reinstate(conn, tenant.0)?;
        if !suspended {
            crate::queue::model::resume_tenant(conn, tenant)?;
        }
        let view = of(conn, settings, tenant.0)?;
        let data =
            serde_json::to_value(&view).map_err(|e| AppError::internal("reputation view", e))?;
        model::enqueue_event(conn, tenant.0, "tenant.reinstated", &data)?;
        audit::record(
            conn,
            actor,
            "tenant.reinstated",
            Some(tenant.0),
            tenant.0,
            serde_json::json!({
                "status": {"from": before.status, "to": "healthy"},
                "reason": before.reason,
                "note": note,
            }),
        )?;
        Ok::<_, AppError>(view)
    })
    .inspect(|_| {
        super::checker::count("reinstated");
        tracing::info!(tenant_id = %tenant.0, "tenant reinstated");
    })
}

/// `POST /v1/tenants/{id}/reinstate`: [`reinstate_on`], and this node's
/// gate opens at once.
pub async fn reinstate(
    state: &AppState,
    actor: &Actor,
    tenant: TenantId,
    note: Option<String>,
) -> AppResult<ReputationView> {
    let settings = state.settings.clone();
    let actor = actor.clone();
    let view = db::run(&state.pool, move |conn| {
        reinstate_on(conn, &settings.reputation, &actor, tenant, note)
    })
    .await?;
    state.reputation.reinstate(tenant.0);
    Ok(view)
}
