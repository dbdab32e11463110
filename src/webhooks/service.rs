//! Webhook business rules: endpoints per owner (a tenant, or the platform),
//! the deliveries log, and the test ping.

use chrono::{SecondsFormat, Utc};
use diesel::Connection;
use uuid::Uuid;

use super::deliveries::{self, Attempt, DeliveryRow, Next};
use super::input::{CreateWebhook, UpdateWebhook, WebhookChanges};
use super::model::{self, Owner, WebhookRow};
use super::signing;
use super::view::{CreatedWebhook, DeliveryView, WebhookView};
use super::PING_EVENT;
use crate::audit::{self, Actor};
use crate::db;
use crate::db::pagination::{Page, PageRequest};
use crate::error::{AppError, AppResult, FieldError};
use crate::net_guard::Guard;
use crate::state::AppState;

fn guard(state: &AppState) -> Guard {
    Guard::new(state.settings.webhooks.allow_private_targets)
}

/// An id segment that is not a UUID names nothing.
fn parse_id(raw: &str) -> AppResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| AppError::NotFound)
}

/// The save-time DNS half of the URL check: a name whose addresses are
/// refused is refused now, not only at delivery.
async fn check_resolves(state: &AppState, changes: &WebhookChanges) -> AppResult<()> {
    let Some(url) = &changes.url else {
        return Ok(());
    };
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    guard(state)
        .check_resolved(&host)
        .await
        .map_err(|r| AppError::invalid("url", format!("is not allowed: {r}")))
}

fn apply(row: &mut WebhookRow, c: WebhookChanges) {
    if let Some(url) = c.url {
        row.url = url;
    }
    if let Some(events) = c.events {
        row.events = events;
    }
    if let Some(d) = c.description {
        row.description = d;
    }
    if let Some(enabled) = c.enabled {
        row.enabled = enabled;
        if enabled {
            row.disabled_reason = None;
        }
    }
}

/// The audit snapshot of an endpoint: its view (never the secret).
fn snapshot(row: &WebhookRow) -> serde_json::Value {
    serde_json::to_value(WebhookView::from(row.clone())).unwrap_or_default()
}

pub async fn create(
    state: &AppState,
    actor: &Actor,
    owner: Owner,
    input: CreateWebhook,
) -> AppResult<CreatedWebhook> {
    let changes = UpdateWebhook::from(input).validate(guard(state))?;
    check_resolves(state, &changes).await?;
    let (key, shown) = signing::generate();
    let id = Uuid::new_v4();
    let now = Utc::now();
    let mut row = WebhookRow {
        id,
        tenant_id: owner.tenant_id(),
        url: String::new(),
        events: Vec::new(),
        description: None,
        secret_enc: state.vault.seal(&key, &signing::secret_context(id)),
        enabled: true,
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    };
    apply(&mut row, changes);
    let actor = actor.clone();
    let cap = state.settings.webhooks.max_endpoints_per_tenant;
    let saved = db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            if let Owner::Tenant(t) = owner {
                let n = model::count_locked(conn, t)?;
                if usize::try_from(n).unwrap_or(usize::MAX) >= cap {
                    return Err(AppError::Validation {
                        code: "webhook_limit_reached",
                        detail: format!(
                            "A tenant may have at most {cap} webhook endpoints \
                             (webhooks.max_endpoints_per_tenant); delete one first."
                        ),
                        errors: vec![FieldError::new(
                            "url",
                            format!("this tenant already has {cap} endpoints"),
                        )],
                    });
                }
            }
            let saved = model::insert(conn, &row)?;
            let changes = snapshot(&saved);
            audit::record(
                conn,
                &actor,
                "webhook.created",
                saved.tenant_id,
                saved.id,
                changes,
            )?;
            Ok::<_, AppError>(saved)
        })
    })
    .await?;
    tracing::info!(webhook_id = %saved.id, tenant_id = ?saved.tenant_id, "webhook created");
    Ok(CreatedWebhook {
        webhook: saved.into(),
        secret: shown,
    })
}

pub async fn list(
    state: &AppState,
    owner: Owner,
    page: PageRequest,
) -> AppResult<Page<WebhookView>> {
    let rows = db::run(&state.pool, move |conn| Ok(model::list(conn, owner, page)?)).await?;
    Ok(Page::from_rows(
        rows,
        page,
        WebhookRow::position,
        WebhookView::from,
    ))
}

pub async fn get(state: &AppState, owner: Owner, id: &str) -> AppResult<WebhookView> {
    let id = parse_id(id)?;
    db::run(&state.pool, move |conn| {
        model::find(conn, owner, id, false)?.ok_or(AppError::NotFound)
    })
    .await
    .map(Into::into)
}

pub async fn update(
    state: &AppState,
    actor: &Actor,
    owner: Owner,
    id: &str,
    patch: UpdateWebhook,
) -> AppResult<WebhookView> {
    let id = parse_id(id)?;
    let changes = patch.validate(guard(state))?;
    check_resolves(state, &changes).await?;
    let actor = actor.clone();
    db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let mut row = model::find(conn, owner, id, true)?.ok_or(AppError::NotFound)?;
            let before = snapshot(&row);
            apply(&mut row, changes);
            let saved = model::save(conn, &mut row)?;
            let diff = audit::diff(&before, &snapshot(&saved));
            audit::record(
                conn,
                &actor,
                "webhook.updated",
                saved.tenant_id,
                saved.id,
                diff,
            )?;
            Ok::<_, AppError>(saved)
        })
    })
    .await
    .map(Into::into)
}

pub async fn delete(state: &AppState, actor: &Actor, owner: Owner, id: &str) -> AppResult<()> {
    let id = parse_id(id)?;
    let actor = actor.clone();
    db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            if model::delete(conn, owner, id)? == 0 {
                return Err(AppError::NotFound);
            }
            let changes = serde_json::json!({});
            audit::record(
                conn,
                &actor,
                "webhook.deleted",
                owner.tenant_id(),
                id,
                changes,
            )?;
            Ok(())
        })
    })
    .await
}

/// `GET …/webhooks/{id}/deliveries`: newest first, each with its attempts.
pub async fn deliveries(
    state: &AppState,
    owner: Owner,
    id: &str,
    page: PageRequest,
) -> AppResult<Page<DeliveryView>> {
    let id = parse_id(id)?;
    let (rows, attempts) = db::run(&state.pool, move |conn| {
        let hook = model::find(conn, owner, id, false)?.ok_or(AppError::NotFound)?;
        let rows = deliveries::list(conn, &hook, page)?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let attempts = deliveries::attempts_of(conn, owner, &ids)?;
        Ok((rows, attempts))
    })
    .await?;
    Ok(Page::from_rows(rows, page, DeliveryRow::position, |d| {
        DeliveryView::new(d, &attempts)
    }))
}

/// `POST …/webhooks/{id}/test`: sends a `webhook.test` event now (once, no
/// retries) and answers with the logged delivery.
pub async fn test(state: &AppState, owner: Owner, id: &str) -> AppResult<DeliveryView> {
    let id = parse_id(id)?;
    let now = Utc::now();
    let lease =
        chrono::Duration::seconds(i64::try_from(state.settings.webhooks.lease_secs).unwrap_or(60));
    let delivery_id = Uuid::new_v4();
    let vault = state.vault.clone();
    let (hook, key, payload) = db::run(&state.pool, move |conn| {
        let hook = model::find(conn, owner, id, false)?.ok_or(AppError::NotFound)?;
        let key = vault
            .open(&hook.secret_enc, &signing::secret_context(hook.id))
            .map_err(|e| AppError::internal("webhook secret", e))?;
        let payload = serde_json::json!({
            "type": PING_EVENT,
            "timestamp": now.to_rfc3339_opts(SecondsFormat::Micros, true),
            "data": {"webhook_id": hook.id, "tenant_id": hook.tenant_id},
        });
        deliveries::insert_leased(
            conn,
            &hook,
            &DeliveryRow {
                id: delivery_id,
                webhook_id: hook.id,
                tenant_id: hook.tenant_id,
                email_id: None,
                event_type: PING_EVENT.into(),
                payload: payload.clone(),
                status: "pending".into(),
                attempts: 1,
                next_attempt_at: now + lease,
                last_status_code: None,
                last_error: None,
                created_at: now,
                completed_at: None,
            },
        )?;
        Ok((hook, key, payload))
    })
    .await?;
    let body = serde_json::to_vec(&payload).map_err(|e| AppError::internal("ping payload", e))?;
    let resp = state
        .webhook_sender
        .post(&hook.url, &delivery_id.to_string(), &key, body)
        .await;
    let attempt = Attempt {
        owner,
        delivery_id,
        webhook_id: hook.id,
        attempt: 1,
        status_code: resp.status_code.map(i32::from),
        error: resp.error.clone(),
        duration_ms: i32::try_from(resp.duration.as_millis()).unwrap_or(i32::MAX),
        next: match resp.status_code {
            _ if resp.is_success() => Next::Succeeded,
            Some(410) => Next::Gone,
            _ => Next::Failed,
        },
    };
    db::run(&state.pool, move |conn| {
        deliveries::record(conn, std::slice::from_ref(&attempt))?;
        let row = deliveries::find(conn, &hook, delivery_id)?.ok_or(AppError::NotFound)?;
        let attempts = deliveries::attempts_of(conn, owner, &[delivery_id])?;
        Ok(DeliveryView::new(row, &attempts))
    })
    .await
}
