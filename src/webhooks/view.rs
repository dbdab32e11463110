//! Webhooks as the API shows them. The secret appears once, in the creation
//! response; listings and reads never carry it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::deliveries::{AttemptRow, DeliveryRow};
use super::model::WebhookRow;
use crate::config::Secret;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    /// `null` for a platform-wide endpoint (every tenant's events).
    pub tenant_id: Option<Uuid>,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<WebhookRow> for WebhookView {
    fn from(w: WebhookRow) -> Self {
        WebhookView {
            id: w.id,
            tenant_id: w.tenant_id,
            url: w.url,
            events: w.events,
            description: w.description,
            enabled: w.enabled,
            disabled_reason: w.disabled_reason,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// `201` of `POST …/webhooks`: the endpoint plus its secret, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_…`: in this response only; wiped from memory after it.
    #[serde(serialize_with = "Secret::serialize_exposed")]
    #[schema(value_type = String)]
    pub secret: Secret,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
}

/// One entry of `GET …/deliveries`; `id` is the `webhook-id` header.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_type: String,
    pub tenant_id: Option<Uuid>,
    pub email_id: Option<Uuid>,
    /// `pending` (waiting for its next try), `succeeded` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub log: Vec<AttemptView>,
}

impl DeliveryView {
    pub fn new(d: DeliveryRow, attempts: &[AttemptRow]) -> Self {
        let log = attempts
            .iter()
            .filter(|a| a.delivery_id == d.id)
            .map(|a| AttemptView {
                attempt: a.attempt,
                at: a.at,
                status_code: a.status_code,
                error: a.error.clone(),
                duration_ms: a.duration_ms,
            })
            .collect();
        DeliveryView {
            next_attempt_at: (d.status == "pending").then_some(d.next_attempt_at),
            id: d.id,
            webhook_id: d.webhook_id,
            event_type: d.event_type,
            tenant_id: d.tenant_id,
            email_id: d.email_id,
            status: d.status,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            created_at: d.created_at,
            completed_at: d.completed_at,
            payload: d.payload,
            log,
        }
    }
}
