//! The webhook outbox. [`enqueue`] runs inside the transaction that changes a
//! message's status (ingest for `email.queued`, `queue::record::record` for the
//! outcomes), so an event reaches webhooks exactly when its status change
//! commits. It is one statement, planned at each call; a cheaper one kept
//! prepared runs first and skips it when neither the events' tenants nor the
//! platform have an enabled endpoint (the common case of an ingest commit:
//! planning the join cost ~0.3 ms per commit, issue 24). Deliveries to a
//! tenant's endpoints and to the platform's go to separate outboxes
//! ([`to_outboxes`]).

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
    if !any_subscriber(conn, &tenants)? {
        return Ok(0);
    }
    let emails: Vec<Uuid> = events.iter().map(|e| e.email_id).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let details: Vec<&serde_json::Value> = events.iter().map(|e| &e.detail).collect();
    let ats: Vec<DateTime<Utc>> = events.iter().map(|e| e.at).collect();
    diesel::sql_query(crate::webhooks::outbox::to_outboxes(
        "SELECT gen_random_uuid(), w.id, e.tenant_id, e.email_id, e.kind, \
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
           now(), now(), w.tenant_id IS NULL \
         FROM unnest($1, $2, $3, $4, $5) AS e(tenant_id, email_id, kind, detail, at) \
         JOIN webhook_subscribers w \
           ON (w.tenant_id = e.tenant_id OR w.tenant_id IS NULL) AND w.enabled \
          AND ('*' = ANY (w.events) OR e.kind = ANY (w.events)) \
         JOIN emails m ON m.tenant_id = e.tenant_id AND m.id = e.email_id \
         JOIN tenants t ON t.id = e.tenant_id",
    ))
    .bind::<Array<SqlUuid>, _>(&tenants)
    .bind::<Array<SqlUuid>, _>(&emails)
    .bind::<Array<Text>, _>(&kinds)
    .bind::<Array<Jsonb>, _>(&details)
    .bind::<Array<Timestamptz>, _>(&ats)
    .execute(conn)
}

/// Whether any of `tenants`, or the platform, has an enabled endpoint (of
/// whatever events): one fixed text, kept prepared; the tenants through
/// the partial index of enabled endpoints, the platform's small table read whole.
fn any_subscriber(conn: &mut PgConnection, tenants: &[Uuid]) -> QueryResult<bool> {
    crate::db::prepared::query(
        "SELECT EXISTS (SELECT 1 FROM webhooks WHERE enabled AND tenant_id = ANY($1)) \
             OR EXISTS (SELECT 1 FROM platform_webhooks WHERE enabled) AS flag",
    )
    .bind::<Array<SqlUuid>, _>(tenants)
    .flag(conn)
}

/// The columns an outbox row is written with.
const OUTBOX_COLUMNS: &str =
    "id, webhook_id, tenant_id, email_id, event_type, payload, next_attempt_at, created_at";

/// Wraps `select` into the statement that writes its rows to the right
/// outbox: `webhook_deliveries` for a tenant's endpoint (keyed by tenant,
/// distributed with it), `platform_webhook_deliveries` for a platform one
/// (a reference table). `select` yields the [`OUTBOX_COLUMNS`] and then
/// whether the endpoint is the platform's; it joins the `webhook_subscribers`
/// view (both kinds of endpoint, `tenant_id` NULL for the platform's). The
/// statement's row count is the number of deliveries written.
pub fn to_outboxes(select: &str) -> String {
    // Typed here: an untyped NULL (a delivery without a message) would be
    // `text` in the CTE.
    const TYPED: &str = "id::uuid, webhook_id::uuid, tenant_id::uuid, email_id::uuid, \
        event_type::text, payload::jsonb, next_attempt_at::timestamptz, created_at::timestamptz";
    format!(
        "WITH src ({OUTBOX_COLUMNS}, platform) AS ({select}), \
         to_tenant AS (INSERT INTO webhook_deliveries ({OUTBOX_COLUMNS}) \
           SELECT {TYPED} FROM src WHERE NOT platform RETURNING 1), \
         to_platform AS (INSERT INTO platform_webhook_deliveries ({OUTBOX_COLUMNS}) \
           SELECT {TYPED} FROM src WHERE platform RETURNING 1) \
         SELECT 1 FROM to_tenant UNION ALL SELECT 1 FROM to_platform"
    )
}
