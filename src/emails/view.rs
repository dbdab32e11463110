//! Messages as the API shows them. Bcc recipients and bodies are not listed.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::model::{EmailRow, EmailSummaryRow, EventRow};
use crate::queue::model::QueueState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub id: Uuid,
    /// `queued`, or `scheduled` with `scheduled_at`.
    pub status: &'static str,
}

impl Accepted {
    pub fn of(r: &super::model::NewEmail) -> Accepted {
        Accepted {
            id: r.id,
            status: match r.scheduled_at {
                Some(_) => "scheduled",
                None => "queued",
            },
        }
    }
}

/// What a reader sees of a stored status. `scheduled` stays stored until the
/// first attempt's outcome is recorded; once `scheduled_at` has passed the
/// message is simply waiting for a worker, and shows `queued` (or `sending`
/// under lease, as queued and deferred mail does).
pub fn shown_status(stored: &str, scheduled_at: Option<DateTime<Utc>>, leased: bool) -> String {
    let pending = matches!(stored, "queued" | "deferred" | "held" | "scheduled");
    match stored {
        _ if pending && leased => "sending".into(),
        "scheduled" if scheduled_at.is_none_or(|at| at <= Utc::now()) => "queued".into(),
        other => other.into(),
    }
}

/// The answer to a batch send.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchAccepted {
    pub data: Vec<Accepted>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmailSummary {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub status: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    #[schema(value_type = Object)]
    pub tags: serde_json::Value,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub scheduled_at: Option<DateTime<Utc>>,
    /// `transactional` or `broadcast`.
    pub stream: String,
}

impl From<EmailSummaryRow> for EmailSummary {
    fn from(r: EmailSummaryRow) -> Self {
        EmailSummary {
            id: r.id,
            tenant_id: r.tenant_id,
            // `sending` was already decided by the listing (under lease).
            status: shown_status(&r.status, r.scheduled_at, false),
            scheduled_at: r.scheduled_at,
            stream: r.stream,
            from: r.from_addr,
            to: r.to_addrs,
            subject: r.subject,
            tags: r.tags,
            attempts: r.attempts,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    #[serde(rename = "type")]
    pub kind: String,
    pub at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmailDetail {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub status: String,
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub reply_to: Vec<String>,
    pub subject: String,
    #[schema(value_type = Object)]
    pub tags: serde_json::Value,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub smtp_response: Option<String>,
    pub message_id: String,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// When a scheduled message may first be sent; `null` for mail sent at once.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// `transactional` or `broadcast`.
    pub stream: String,
    /// Each recipient's own state (issue 13).
    pub recipients: Vec<RecipientView>,
    /// When retention (`retention.content_days` or the tenant's override)
    /// removed the body, headers and attachments; `null` while they are kept.
    /// Status, addresses, subject, tags and events stay until
    /// `retention.metadata_days`.
    pub content_purged_at: Option<DateTime<Utc>>,
    pub events: Vec<EventView>,
}

/// One recipient of a message: `status` queued, delivered, deferred,
/// bounced, complained, suppressed or failed; `bounce` when it bounced.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecipientView {
    pub email: String,
    /// `to`, `cc` or `bcc`.
    pub kind: String,
    pub status: String,
    pub smtp_response: Option<String>,
    /// `{"type": "hard|soft", "status": "5.1.1", "diagnostic", "reported_by"}`.
    #[schema(value_type = Option<Object>)]
    pub bounce: Option<serde_json::Value>,
    pub updated_at: DateTime<Utc>,
    /// The first open / click a person made (tracked mail; machine events
    /// never set them).
    pub first_opened_at: Option<DateTime<Utc>>,
    pub first_clicked_at: Option<DateTime<Utc>>,
}

impl From<crate::bounces::recipients::RecipientRow> for RecipientView {
    fn from(r: crate::bounces::recipients::RecipientRow) -> Self {
        RecipientView {
            email: r.recipient,
            kind: r.kind,
            status: r.status,
            smtp_response: r.smtp_response,
            bounce: r.bounce,
            updated_at: r.updated_at,
            first_opened_at: r.first_opened_at,
            first_clicked_at: r.first_clicked_at,
        }
    }
}

impl EmailDetail {
    /// `queue`: the message's queue row, while it has one: under lease the
    /// message shows as `sending`; waiting, with its next attempt.
    pub fn new(r: EmailRow, queue: Option<QueueState>, events: Vec<EventRow>) -> Self {
        let pending = matches!(
            r.status.as_str(),
            "queued" | "deferred" | "held" | "scheduled"
        );
        let leased = pending && queue.as_ref().is_some_and(|q| q.leased);
        EmailDetail {
            id: r.id,
            tenant_id: r.tenant_id,
            next_attempt_at: queue
                .as_ref()
                .filter(|_| pending && !leased)
                .map(|q| q.next_attempt_at),
            status: shown_status(&r.status, r.scheduled_at, leased),
            scheduled_at: r.scheduled_at,
            stream: r.stream,
            from: r.from_addr,
            to: r.to_addrs,
            cc: r.cc_addrs,
            reply_to: r.reply_to,
            subject: r.subject,
            tags: r.tags,
            attempts: r.attempts,
            last_error: r.last_error,
            smtp_response: r.smtp_response,
            message_id: r.message_id,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
            recipients: Vec::new(),
            content_purged_at: r.content_purged_at,
            events: events
                .into_iter()
                .map(|e| EventView {
                    kind: e.kind,
                    at: e.at,
                    detail: e.detail,
                })
                .collect(),
        }
    }
}
