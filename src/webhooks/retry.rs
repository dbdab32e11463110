//! Retrying a failed delivery at once (the console's Retry button and
//! `POST …/webhooks/{id}/deliveries/{delivery_id}/retry`): the
//! delivery goes back to the outbox, due now, and the dispatcher sends it
//! like any other. Its attempts keep counting, and its retry window still
//! runs from the event, so a retried delivery past `webhooks.retry_window_secs`
//! gets one more attempt, not a new series.

use diesel::Connection;
use uuid::Uuid;

use super::deliveries;
use super::model::{self, Owner};
use super::view::DeliveryView;
use crate::audit::{self, Actor};
use crate::db;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Re-queues the owner's failed delivery `id` now; with `webhook`, only a
/// delivery of that endpoint (the API's path names both). Another owner's
/// delivery is the same not-found as a missing one; one that is pending or
/// succeeded, or whose endpoint is disabled, is a conflict (nothing changes).
pub async fn retry(
    state: &AppState,
    actor: &Actor,
    owner: Owner,
    webhook: Option<&str>,
    id: &str,
) -> AppResult<DeliveryView> {
    let id = Uuid::parse_str(id).map_err(|_| AppError::NotFound)?;
    let webhook = match webhook {
        Some(w) => Some(Uuid::parse_str(w).map_err(|_| AppError::NotFound)?),
        None => None,
    };
    let actor = actor.clone();
    db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let delivery = deliveries::find_for_owner(conn, owner, id)?
                .filter(|d| webhook.is_none_or(|w| w == d.webhook_id))
                .ok_or(AppError::NotFound)?;
            let hook =
                model::find(conn, owner, delivery.webhook_id, true)?.ok_or(AppError::NotFound)?;
            if !hook.enabled {
                return Err(AppError::conflict(
                    "The endpoint is disabled; enable it before retrying.",
                ));
            }
            if deliveries::requeue(conn, &hook, id)? == 0 {
                return Err(AppError::conflict("Only a failed delivery can be retried."));
            }
            let changes = serde_json::json!({"webhook_id": hook.id, "attempts": delivery.attempts});
            audit::record(
                conn,
                &actor,
                "webhook.delivery_retried",
                owner.tenant_id(),
                id,
                changes,
            )?;
            let row = deliveries::find_for_owner(conn, owner, id)?.ok_or(AppError::NotFound)?;
            let attempts = deliveries::attempts_of(conn, owner, &[id])?;
            Ok(DeliveryView::new(row, &attempts))
        })
    })
    .await
}
