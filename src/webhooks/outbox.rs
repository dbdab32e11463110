//! The webhook outbox. [`enqueue`] runs inside the transaction that changes a
//! message's status (ingest for `email.queued`, `queue::claim::record` for the
//! outcomes), so an event reaches webhooks exactly when its status change
//! commits. It is one statement, and when nobody subscribes it writes nothing:
//! the join with the enabled endpoints is empty.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Jsonb, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use super::EVENTS;
use crate::emails::model::NewEvent;

/// Writes one delivery per (event, subscribed endpoint): the tenant's own
/// endpoints and the platform-wide ones. The payload is built here, in SQL,
/// from the message and tenant rows as they are in this transaction.
pub fn enqueue(conn: &mut PgConnection, events: &[NewEvent]) -> QueryResult<usize> {
    let events: Vec<&NewEvent> = events
        .iter()
        .filter(|e| EVENTS.contains(&e.kind.as_str()))
        .collect();
    if events.is_empty() {
        return Ok(0);
    }
    let tenants: Vec<Uuid> = events.iter().map(|e| e.tenant_id).collect();
    let emails: Vec<Uuid> = events.iter().map(|e| e.email_id).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let details: Vec<&serde_json::Value> = events.iter().map(|e| &e.detail).collect();
    let ats: Vec<DateTime<Utc>> = events.iter().map(|e| e.at).collect();
    diesel::sql_query(
        "INSERT INTO webhook_deliveries \
           (id, webhook_id, tenant_id, email_id, event_type, payload, next_attempt_at, created_at) \
         SELECT gen_random_uuid(), w.id, e.tenant_id, e.email_id, e.kind, \
           jsonb_build_object( \
             'type', e.kind, \
             'timestamp', to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
             'data', jsonb_build_object( \
               'email_id', e.email_id, \
               'tenant_id', e.tenant_id, \
               'external_tenant_id', t.external_id, \
               'to', to_jsonb(m.to_addrs), \
               'subject', m.subject, \
               'tags', m.tags, \
               'smtp_response', COALESCE(e.detail ->> 'smtp_response', m.smtp_response)) \
               || jsonb_strip_nulls(jsonb_build_object( \
                    'recipient', e.detail -> 'recipient', \
                    'bounce', (e.detail -> 'bounce') - 'reported_by', \
                    'feedback_type', e.detail -> 'feedback_type')) \
               || COALESCE(e.detail -> 'tracking', '{}'::jsonb)), \
           now(), now() \
         FROM unnest($1, $2, $3, $4, $5) AS e(tenant_id, email_id, kind, detail, at) \
         JOIN webhooks w \
           ON (w.tenant_id = e.tenant_id OR w.tenant_id IS NULL) AND w.enabled \
          AND ('*' = ANY (w.events) OR e.kind = ANY (w.events)) \
         JOIN emails m ON m.tenant_id = e.tenant_id AND m.id = e.email_id \
         JOIN tenants t ON t.id = e.tenant_id",
    )
    .bind::<Array<SqlUuid>, _>(&tenants)
    .bind::<Array<SqlUuid>, _>(&emails)
    .bind::<Array<Text>, _>(&kinds)
    .bind::<Array<Jsonb>, _>(&details)
    .bind::<Array<Timestamptz>, _>(&ats)
    .execute(conn)
}
