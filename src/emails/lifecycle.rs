//! The SQL of cancel and reschedule. Each change is one statement over the
//! queue row and the message together, conditioned on the queue row being
//! unleased: a claim locks the row `FOR UPDATE` before it sets the lease, so
//! the statement either runs first (the claim then skips or no longer finds
//! the row) or waits for the claim's COMMIT and, re-checking the row, finds
//! it leased and changes nothing. A worker holding a lease therefore never
//! sees its message canceled or moved under it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use super::model::NewEvent;
use crate::db::schema::{email_events, emails};
use crate::domain::TenantId;

/// The statuses a cancel applies to (with no lease on the queue row).
pub const CANCELABLE: &[&str] = &["scheduled", "queued", "deferred", "held"];

#[derive(QueryableByName)]
struct Changed {
    #[diesel(sql_type = SqlUuid)]
    #[allow(dead_code)]
    id: Uuid,
}

/// Why a change did not apply.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No such message for this tenant.
    Missing,
    /// It exists, but its state does not allow the change.
    State,
}

fn refusal(conn: &mut PgConnection, tenant: TenantId, id: Uuid) -> QueryResult<Refused> {
    let found: Option<String> = emails::table
        .find((tenant.0, id))
        .select(emails::status)
        .first(conn)
        .optional()?;
    Ok(match found {
        Some(_) => Refused::State,
        None => Refused::Missing,
    })
}

fn event(conn: &mut PgConnection, e: NewEvent) -> QueryResult<()> {
    let events = [e];
    diesel::insert_into(email_events::table)
        .values(&events[..])
        .execute(conn)?;
    crate::webhooks::outbox::enqueue(conn, &events).map(drop)
}

/// Cancels a waiting message: its queue row is deleted (only while no
/// worker holds a lease on it) and the message becomes `canceled`, with an
/// `email.canceled` event. The caller holds the transaction.
pub fn cancel(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
) -> QueryResult<Result<(), Refused>> {
    let done: Vec<Changed> = diesel::sql_query(
        "WITH q AS (DELETE FROM email_queue q USING emails e \
           WHERE q.tenant_id = $1 AND q.email_id = $2 AND q.lease_until IS NULL \
             AND e.tenant_id = q.tenant_id AND e.id = q.email_id \
             AND e.status IN ('scheduled', 'queued', 'deferred', 'held') \
           RETURNING q.email_id) \
         UPDATE emails e SET status = 'canceled' FROM q \
         WHERE e.tenant_id = $1 AND e.id = q.email_id RETURNING e.id",
    )
    .bind::<SqlUuid, _>(tenant.0)
    .bind::<SqlUuid, _>(id)
    .load(conn)?;
    if done.is_empty() {
        return Ok(Err(refusal(conn, tenant, id)?));
    }
    event(
        conn,
        NewEvent {
            tenant_id: tenant.0,
            email_id: id,
            kind: "email.canceled".into(),
            detail: serde_json::json!({"reason": "canceled by request"}),
            at: Utc::now(),
        },
    )?;
    Ok(Ok(()))
}

/// Moves a scheduled message whose time has not come yet to `at` (queue row
/// and message together, only while unleased); its lifetime (`expires_at`)
/// moves with it. Records `email.scheduled` with the new time.
pub fn reschedule(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> QueryResult<Result<(), Refused>> {
    let done: Vec<Changed> = diesel::sql_query(
        "WITH q AS (UPDATE email_queue q SET next_attempt_at = $3 FROM emails e \
           WHERE q.tenant_id = $1 AND q.email_id = $2 AND q.lease_until IS NULL \
             AND e.tenant_id = q.tenant_id AND e.id = q.email_id \
             AND e.status = 'scheduled' AND e.scheduled_at > now() \
           RETURNING q.email_id) \
         UPDATE emails e SET scheduled_at = $3, expires_at = $4 FROM q \
         WHERE e.tenant_id = $1 AND e.id = q.email_id RETURNING e.id",
    )
    .bind::<SqlUuid, _>(tenant.0)
    .bind::<SqlUuid, _>(id)
    .bind::<Timestamptz, _>(at)
    .bind::<Timestamptz, _>(expires_at)
    .load(conn)?;
    if done.is_empty() {
        return Ok(Err(refusal(conn, tenant, id)?));
    }
    event(
        conn,
        NewEvent {
            tenant_id: tenant.0,
            email_id: id,
            kind: "email.scheduled".into(),
            detail: serde_json::json!({"scheduled_at": at, "rescheduled": true}),
            at: Utc::now(),
        },
    )?;
    Ok(Ok(()))
}
