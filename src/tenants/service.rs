//! Tenant business rules: create, update, suspend, delete.

use chrono::Utc;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use uuid::Uuid;

use super::input::{CreateTenant, UpdateTenant};
use super::model::{self, TenantRef, TenantRow};
use crate::audit::{self, Actor};
use crate::db;
use crate::db::pagination::{Page, PageRequest};
use crate::domain::TenantId;
use crate::emails::model as emails_db;
use crate::error::{AppError, AppResult};
use crate::keys::model as keys_db;
use crate::net_guard::Guard;
use crate::state::AppState;
use crate::templates::model as templates_db;
use crate::templates::starter;

use super::view::TenantView;

fn blank_tenant() -> TenantRow {
    let now = Utc::now();
    TenantRow {
        id: Uuid::new_v4(),
        external_id: None,
        name: String::new(),
        domain: None,
        settings: serde_json::json!({}),
        smtp_host: None,
        smtp_port: None,
        smtp_username: None,
        smtp_password_enc: None,
        smtp_tls: None,
        requests_per_minute: None,
        emails_per_day: None,
        emails_per_second: None,
        status: "active".into(),
        created_at: now,
        updated_at: now,
        deleted_at: None,
        retention_content_days: None,
        reputation_policy: None,
        pools: serde_json::json!({}),
    }
}

/// Maps the live-external_id unique index to a readable 409.
fn external_id_conflict(e: DieselError) -> AppError {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            AppError::conflict("external_id is already used by another tenant.")
        }
        other => other.into(),
    }
}

/// Inserts a new tenant with its copy of the starter templates, in one
/// transaction: a tenant never exists without them.
fn insert_with_starters(conn: &mut PgConnection, row: &TenantRow) -> QueryResult<TenantRow> {
    conn.transaction(|conn| {
        let saved = row.insert(conn)?;
        templates_db::insert(conn, &starter::rows_for(saved.tenant_id()))?;
        if let Some(name) = &saved.domain {
            crate::domains::model::adopt_legacy(conn, saved.tenant_id(), name)?;
        }
        Ok(saved)
    })
}

/// The SMTP-override guard (`delivery.allow_private_relays`).
fn relay_guard(state: &AppState) -> Guard {
    Guard::new(state.settings.delivery.allow_private_relays)
}

/// The save-time DNS half of the relay check: a name whose addresses are
/// refused is refused now, not only when mail is sent.
async fn check_relay_resolves(state: &AppState, host: Option<&str>) -> AppResult<()> {
    if let Some(host) = host {
        relay_guard(state)
            .check_resolved(host)
            .await
            .map_err(|r| AppError::invalid("smtp.host", format!("is not allowed: {r}")))?;
    }
    Ok(())
}

/// The audit snapshot of a tenant: its view (which never holds the password).
fn snapshot(row: &TenantRow) -> serde_json::Value {
    serde_json::to_value(TenantView::from(row.clone())).unwrap_or_default()
}

/// Inserts the tenant (with its starters) and its `tenant.created` entry in
/// one transaction.
fn insert_audited(conn: &mut PgConnection, row: &TenantRow, actor: &Actor) -> AppResult<TenantRow> {
    conn.transaction(|conn| {
        let saved = insert_with_starters(conn, row).map_err(external_id_conflict)?;
        audit::record(
            conn,
            actor,
            "tenant.created",
            Some(saved.id),
            saved.id,
            snapshot(&saved),
        )?;
        Ok(saved)
    })
}

pub async fn create(state: &AppState, actor: &Actor, input: CreateTenant) -> AppResult<TenantView> {
    let mut row = blank_tenant();
    UpdateTenant::from(input).apply(&mut row, &state.vault, relay_guard(state))?;
    check_relay_resolves(state, row.smtp_host.as_deref()).await?;
    let actor = actor.clone();
    let saved = db::run(&state.pool, move |conn| insert_audited(conn, &row, &actor)).await?;
    state.domains.rule.invalidate();
    tracing::info!(tenant_id = %saved.id, "tenant created");
    Ok(saved.into())
}

pub async fn get(state: &AppState, r: TenantRef) -> AppResult<TenantView> {
    db::run(&state.pool, move |conn| {
        model::find(conn, &r, false)?.ok_or(AppError::NotFound)
    })
    .await
    .map(Into::into)
}

pub async fn list(state: &AppState, page: PageRequest) -> AppResult<Page<TenantView>> {
    let rows = db::run(&state.pool, move |conn| Ok(model::list(conn, page)?)).await?;
    Ok(Page::from_rows(
        rows,
        page,
        TenantRow::position,
        TenantView::from,
    ))
}

pub async fn update(
    state: &AppState,
    actor: &Actor,
    r: TenantRef,
    patch: UpdateTenant,
) -> AppResult<TenantView> {
    if let Some(Some(host)) = patch
        .smtp
        .as_ref()
        .map(|s| s.as_ref().and_then(|s| s.host.as_deref()))
    {
        let host = host.trim().to_string();
        check_relay_resolves(state, Some(&host)).await?;
    }
    if let Some(pools) = &patch.pools {
        pools.check(&crate::delivery::pools::PoolNames::new(
            &state.settings.delivery.pools,
        ))?;
    }
    let vault = state.vault.clone();
    let guard = relay_guard(state);
    let actor = actor.clone();
    let (saved, status_changed) = db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let mut row = model::find(conn, &r, true)?.ok_or(AppError::NotFound)?;
            let before = row.clone();
            patch.apply(&mut row, &vault, guard)?;
            let saved = row.save(conn).map_err(external_id_conflict)?;
            if let Some(name) = &saved.domain {
                crate::domains::model::adopt_legacy(conn, saved.tenant_id(), name)?;
            }
            let changed = saved.status != before.status;
            // Suspension holds the tenant's waiting mail; activation resumes it.
            match (before.status.as_str(), saved.status.as_str()) {
                (_, "suspended") if changed => {
                    crate::queue::model::hold_tenant(conn, saved.tenant_id())?;
                }
                ("suspended", "active") => {
                    crate::queue::model::resume_tenant(conn, saved.tenant_id())?;
                }
                _ => {}
            }
            let action = match saved.status.as_str() {
                "suspended" if changed => "tenant.suspended",
                "active" if changed => "tenant.reactivated",
                _ => "tenant.updated",
            };
            let mut changes = audit::diff(&snapshot(&before), &snapshot(&saved));
            if saved.smtp_password_enc != before.smtp_password_enc {
                // A new password shows as set, never as its value.
                changes["smtp_password"] =
                    serde_json::json!({"password_set": saved.smtp_password_enc.is_some()});
            }
            audit::record(conn, &actor, action, Some(saved.id), saved.id, changes)?;
            Ok::<_, AppError>((saved, changed))
        })
    })
    .await?;
    state.tenants.invalidate(saved.tenant_id());
    state.domains.rule.invalidate();
    if status_changed {
        // Suspension must bite at once on this node (DESIGN §4), for this
        // tenant's keys only.
        state.auth.invalidate_tenant(saved.tenant_id());
        tracing::info!(tenant_id = %saved.id, status = %saved.status, "tenant status changed");
    }
    Ok(saved.into())
}

/// Marks the tenant deleted, revokes its keys (and, with the queue, cancels its
/// queued mail) in one transaction.
pub async fn delete(state: &AppState, actor: &Actor, r: TenantRef) -> AppResult<()> {
    let actor = actor.clone();
    let id = db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let mut row = model::find(conn, &r, true)?.ok_or(AppError::NotFound)?;
            row.status = "deleted".into();
            row.deleted_at = Some(Utc::now());
            row.save(conn)?;
            keys_db::revoke_all_of_tenant(conn, row.tenant_id())?;
            emails_db::cancel_pending_of_tenant(conn, row.tenant_id())?;
            let changes = serde_json::json!({"name": row.name, "external_id": row.external_id});
            audit::record(
                conn,
                &actor,
                "tenant.deleted",
                Some(row.id),
                row.id,
                changes,
            )?;
            Ok::<_, AppError>(row.id)
        })
    })
    .await?;
    state.auth.invalidate_tenant(TenantId(id));
    state.tenants.invalidate(TenantId(id));
    tracing::info!(tenant_id = %id, "tenant deleted");
    Ok(())
}

/// Platform style with `tenants.auto_create`: an unknown external_id sent to
/// by an admin becomes a tenant with default settings. Concurrent first sends
/// race on the unique index; the loser simply finds the winner's row.
pub async fn auto_create(state: &AppState, actor: &Actor, external_id: &str) -> AppResult<()> {
    let input = CreateTenant {
        name: external_id.to_string(),
        external_id: Some(external_id.to_string()),
        domain: None,
        settings: None,
        smtp: None,
        rate_limit: None,
        retention_content_days: None,
    };
    let mut row = blank_tenant();
    UpdateTenant::from(input).apply(&mut row, &state.vault, relay_guard(state))?;
    let actor = actor.clone();
    let created = db::run(&state.pool, move |conn| {
        match insert_audited(conn, &row, &actor) {
            Ok(_) => Ok(true),
            // The unique index: another first send created it.
            Err(AppError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    })
    .await?;
    if created {
        tracing::info!(external_id, "tenant auto-created");
    }
    Ok(())
}
