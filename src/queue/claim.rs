//! The worker's side of the queue: claim due messages with a lease
//! (`FOR UPDATE SKIP LOCKED`, so workers never wait on each other), reclaim
//! expired leases, and record a batch of outcomes with their events in one
//! transaction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::schema::email_events;
use crate::emails::model::{EmailRow, NewEvent};

/// Claims up to `limit` due messages for `lease_secs`, counting the attempt.
pub fn claim(conn: &mut PgConnection, limit: i64, lease_secs: f64) -> QueryResult<Vec<EmailRow>> {
    diesel::sql_query(
        "UPDATE emails AS e \
         SET status = 'sending', attempts = e.attempts + 1, \
             locked_until = now() + make_interval(secs => $2) \
         FROM (SELECT tenant_id, id FROM emails \
               WHERE status IN ('queued', 'deferred') AND next_attempt_at <= now() \
               ORDER BY next_attempt_at \
               LIMIT $1 \
               FOR UPDATE SKIP LOCKED) AS due \
         WHERE e.tenant_id = due.tenant_id AND e.id = due.id \
         RETURNING e.*",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Double, _>(lease_secs)
    .load(conn)
}

/// Makes messages whose worker died (lease expired) claimable again.
pub fn reclaim_expired(conn: &mut PgConnection) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE emails SET status = 'deferred', locked_until = NULL, next_attempt_at = now(), \
           last_error = 'lease expired: the worker holding it stopped' \
         WHERE status = 'sending' AND locked_until < now()",
    )
    .execute(conn)
}

/// What happened to one claimed message.
#[derive(Clone, Debug)]
pub enum Resolution {
    Delivered {
        response: String,
    },
    Deferred {
        response: String,
        next_attempt_at: DateTime<Utc>,
    },
    Bounced {
        response: String,
    },
    Failed {
        reason: String,
    },
    /// Not attempted (shutdown): back to the queue, attempt not counted.
    Released,
}

impl Resolution {
    fn status(&self) -> &'static str {
        match self {
            Resolution::Delivered { .. } => "delivered",
            Resolution::Deferred { .. } => "deferred",
            Resolution::Bounced { .. } => "bounced",
            Resolution::Failed { .. } => "failed",
            Resolution::Released => "queued",
        }
    }

    /// The event type recorded (and later sent to webhooks).
    pub fn event(&self) -> Option<&'static str> {
        match self {
            Resolution::Delivered { .. } => Some("email.delivered"),
            Resolution::Deferred { .. } => Some("email.deferred"),
            Resolution::Bounced { .. } => Some("email.bounced"),
            Resolution::Failed { .. } => Some("email.failed"),
            Resolution::Released => None,
        }
    }
}

/// One outcome to record.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub tenant_id: Uuid,
    pub email_id: Uuid,
    pub attempt: i32,
    pub resolution: Resolution,
}

/// Writes all outcomes in one statement plus one multi-row event insert and
/// the webhook outbox rows they cause, in one transaction.
/// Only rows still leased (`status = 'sending'`) change, so a late worker
/// whose lease was reclaimed cannot overwrite a newer result.
pub fn record(conn: &mut PgConnection, outcomes: &[Outcome]) -> QueryResult<Vec<(Uuid, Uuid)>> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    conn.transaction(|conn| {
        let mut tenants = Vec::with_capacity(outcomes.len());
        let mut ids = Vec::with_capacity(outcomes.len());
        let mut statuses = Vec::with_capacity(outcomes.len());
        let mut responses: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
        let mut errors: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
        let mut next: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            tenants.push(o.tenant_id);
            ids.push(o.email_id);
            statuses.push(o.resolution.status().to_string());
            let (resp, err, at) = match &o.resolution {
                Resolution::Delivered { response } | Resolution::Bounced { response } => (Some(response.clone()), None, None),
                Resolution::Deferred { response, next_attempt_at } => {
                    (Some(response.clone()), Some(response.clone()), Some(*next_attempt_at))
                }
                Resolution::Failed { reason } => (None, Some(reason.clone()), None),
                Resolution::Released => (None, None, Some(Utc::now())),
            };
            responses.push(resp);
            errors.push(err);
            next.push(at);
        }
        let changed: Vec<(Uuid, Uuid)> = diesel::sql_query(
            "UPDATE emails AS e SET \
               status = u.status, \
               locked_until = NULL, \
               smtp_response = COALESCE(u.resp, e.smtp_response), \
               last_error = CASE WHEN u.status = 'delivered' THEN NULL ELSE COALESCE(u.err, e.last_error) END, \
               next_attempt_at = COALESCE(u.next, e.next_attempt_at), \
               attempts = CASE WHEN u.status = 'queued' THEN GREATEST(e.attempts - 1, 0) ELSE e.attempts END, \
               delivered_at = CASE WHEN u.status = 'delivered' THEN now() ELSE e.delivered_at END \
             FROM unnest($1, $2, $3, $4, $5, $6) AS u(tenant_id, id, status, resp, err, next) \
             WHERE e.tenant_id = u.tenant_id AND e.id = u.id AND e.status = 'sending' \
             RETURNING e.tenant_id, e.id",
        )
        .bind::<Array<SqlUuid>, _>(&tenants)
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Text>, _>(&statuses)
        .bind::<Array<Nullable<Text>>, _>(&responses)
        .bind::<Array<Nullable<Text>>, _>(&errors)
        .bind::<Array<Nullable<Timestamptz>>, _>(&next)
        .load::<ChangedRow>(conn)?
        .into_iter()
        .map(|r| (r.tenant_id, r.id))
        .collect();
        let now = Utc::now();
        let events: Vec<NewEvent> = outcomes
            .iter()
            .filter(|o| changed.contains(&(o.tenant_id, o.email_id)))
            .filter_map(|o| {
                o.resolution.event().map(|kind| NewEvent {
                    tenant_id: o.tenant_id,
                    email_id: o.email_id,
                    kind: kind.to_string(),
                    detail: event_detail(o),
                    at: now,
                })
            })
            .collect();
        if !events.is_empty() {
            diesel::insert_into(email_events::table).values(&events).execute(conn)?;
            crate::webhooks::outbox::enqueue(conn, &events)?;
        }
        Ok(changed)
    })
}

#[derive(QueryableByName)]
struct ChangedRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

fn event_detail(o: &Outcome) -> serde_json::Value {
    match &o.resolution {
        Resolution::Delivered { response } | Resolution::Bounced { response } => {
            serde_json::json!({"attempt": o.attempt, "smtp_response": response})
        }
        Resolution::Deferred {
            response,
            next_attempt_at,
        } => {
            serde_json::json!({"attempt": o.attempt, "smtp_response": response, "next_attempt_at": next_attempt_at})
        }
        Resolution::Failed { reason } => {
            serde_json::json!({"attempt": o.attempt, "reason": reason})
        }
        Resolution::Released => serde_json::json!({}),
    }
}
