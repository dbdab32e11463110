//! The worker's side of the queue: claim due messages with a lease
//! (`FOR UPDATE SKIP LOCKED`, so workers never wait on each other), reclaim
//! expired leases, and record a batch of outcomes with their events in one
//! transaction.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::schema::email_events;
use crate::emails::model::{EmailRow, NewEvent};
use crate::usage::model::{self as usage, Counters};

/// Claims up to `limit` due messages for `lease_secs`, counting the attempt.
/// Tenants in `skip` (paced out right now) are left for later.
pub fn claim(
    conn: &mut PgConnection,
    limit: i64,
    lease_secs: f64,
    skip: &[Uuid],
) -> QueryResult<Vec<EmailRow>> {
    diesel::sql_query(
        "UPDATE emails AS e \
         SET status = 'sending', attempts = e.attempts + 1, \
             locked_until = now() + make_interval(secs => $2) \
         FROM (SELECT tenant_id, id FROM emails \
               WHERE status IN ('queued', 'deferred') AND next_attempt_at <= now() \
                 AND NOT (tenant_id = ANY($3)) \
               ORDER BY next_attempt_at \
               LIMIT $1 \
               FOR UPDATE SKIP LOCKED) AS due \
         WHERE e.tenant_id = due.tenant_id AND e.id = due.id \
         RETURNING e.*",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Double, _>(lease_secs)
    .bind::<Array<SqlUuid>, _>(skip)
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
    /// Not attempted (shutdown, or paced out): back to the queue until `at`,
    /// the attempt not counted.
    Requeued {
        at: DateTime<Utc>,
    },
}

impl Resolution {
    fn status(&self) -> &'static str {
        match self {
            Resolution::Delivered { .. } => "delivered",
            Resolution::Deferred { .. } => "deferred",
            Resolution::Bounced { .. } => "bounced",
            Resolution::Failed { .. } => "failed",
            Resolution::Requeued { .. } => "queued",
        }
    }

    /// The outcome name used in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Resolution::Requeued { .. } => "requeued",
            other => other.status(),
        }
    }

    /// The event type recorded (and later sent to webhooks).
    pub fn event(&self) -> Option<&'static str> {
        match self {
            Resolution::Delivered { .. } => Some("email.delivered"),
            Resolution::Deferred { .. } => Some("email.deferred"),
            Resolution::Bounced { .. } => Some("email.bounced"),
            Resolution::Failed { .. } => Some("email.failed"),
            Resolution::Requeued { .. } => None,
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
                Resolution::Requeued { at } => (None, None, Some(*at)),
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
        let changed: HashSet<(Uuid, Uuid)> = changed.into_iter().collect();
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
        usage::add(conn, now.date_naive(), &terminal_counts(outcomes, &changed))?;
        Ok(changed.into_iter().collect())
    })
}

/// Terminal outcomes per tenant, for usage (only rows this call changed).
fn terminal_counts(
    outcomes: &[Outcome],
    changed: &HashSet<(Uuid, Uuid)>,
) -> BTreeMap<Uuid, Counters> {
    let mut deltas: BTreeMap<Uuid, Counters> = BTreeMap::new();
    for o in outcomes
        .iter()
        .filter(|o| changed.contains(&(o.tenant_id, o.email_id)))
    {
        let c = deltas.entry(o.tenant_id).or_default();
        match o.resolution {
            Resolution::Delivered { .. } => c.emails_delivered += 1,
            Resolution::Bounced { .. } => c.emails_bounced += 1,
            Resolution::Failed { .. } => c.emails_failed += 1,
            Resolution::Deferred { .. } | Resolution::Requeued { .. } => {}
        }
    }
    deltas.retain(|_, c| c.emails_delivered + c.emails_bounced + c.emails_failed > 0);
    deltas
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
        Resolution::Requeued { .. } => serde_json::json!({}),
    }
}
