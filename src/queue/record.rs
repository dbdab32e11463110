//! Recording outcomes, fenced: an outcome changes a message only while the
//! queue row still carries the fence of the claim it belongs to, so a worker
//! whose lease was taken over by another claim writes nothing. Outcomes, their
//! events, the webhook outbox rows and the usage counters commit together.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use super::model::Lease;
use crate::bounces::recipients::{self, Update};
use crate::db::schema::email_events;
use crate::emails::model::NewEvent;
use crate::suppressions::model::{self as suppressions, NewSuppression};
use crate::usage::model::{self as usage, Counters};

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

/// One outcome to record: the lease it belongs to, and which try it was.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub lease: Lease,
    pub attempt: i32,
    pub resolution: Resolution,
    /// What happened to each recipient tried (issue 13); written with the
    /// outcome, under the same fence. Empty for messages without recipient
    /// rows (queued before migration 000010) and for requeues.
    pub recipients: Vec<RcptOutcome>,
}

/// One recipient's result in an [`Outcome`].
#[derive(Clone, Debug)]
pub struct RcptOutcome {
    pub update: Update,
    /// Put the address on the tenant's suppression list (a hard bounce),
    /// expiring then (`None` = never).
    pub suppress: Option<Option<DateTime<Utc>>>,
}

#[derive(QueryableByName)]
struct ChangedRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    email_id: Uuid,
}

/// What [`record`] wrote.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The messages changed (their fence still held).
    pub changed: Vec<(Uuid, Uuid)>,
    /// Webhook outbox rows written (0: no dispatcher needs waking).
    pub webhook_rows: usize,
}

/// Writes the outcomes that still hold their fence, in one transaction: the
/// queue and message rows (one statement), then for the messages it changed
/// their recipients, suppressions, events, webhook outbox rows, usage and
/// reputation counters.
pub fn record(conn: &mut PgConnection, outcomes: &[Outcome]) -> QueryResult<Recorded> {
    if outcomes.is_empty() {
        return Ok(Recorded::default());
    }
    conn.transaction(|conn| {
        let n = outcomes.len();
        let (mut t, mut e, mut f) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let mut statuses = Vec::with_capacity(n);
        let mut responses: Vec<Option<String>> = Vec::with_capacity(n);
        let mut errors: Vec<Option<String>> = Vec::with_capacity(n);
        let mut next: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
        for o in outcomes {
            t.push(o.lease.tenant_id);
            e.push(o.lease.email_id);
            f.push(o.lease.fence);
            statuses.push(o.resolution.status().to_string());
            let (resp, err, at) = match &o.resolution {
                Resolution::Delivered { response } | Resolution::Bounced { response } => {
                    (Some(response.clone()), None, None)
                }
                Resolution::Deferred {
                    response,
                    next_attempt_at,
                } => (Some(response.clone()), Some(response.clone()), Some(*next_attempt_at)),
                Resolution::Failed { reason } => (None, Some(reason.clone()), None),
                Resolution::Requeued { at } => (None, None, Some(*at)),
            };
            responses.push(resp);
            errors.push(err);
            next.push(at);
        }
        let changed: Vec<ChangedRow> = diesel::sql_query(
            "WITH u AS (SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7) \
                         AS u(tenant_id, id, fence, status, resp, err, next)), \
             gone AS (DELETE FROM email_queue q USING u \
                      WHERE q.tenant_id = u.tenant_id AND q.email_id = u.id AND q.fence = u.fence \
                        AND u.status IN ('delivered', 'bounced', 'failed') \
                      RETURNING q.tenant_id, q.email_id), \
             kept AS (UPDATE email_queue q SET lease_until = NULL, next_attempt_at = u.next \
                      FROM u WHERE q.tenant_id = u.tenant_id AND q.email_id = u.id AND q.fence = u.fence \
                        AND u.status IN ('deferred', 'queued') \
                      RETURNING q.tenant_id, q.email_id), \
             hit AS (SELECT * FROM gone UNION ALL SELECT * FROM kept), \
             upd AS (UPDATE emails e SET \
                       status = u.status, \
                       attempts = e.attempts + 1, \
                       smtp_response = COALESCE(u.resp, e.smtp_response), \
                       last_error = CASE WHEN u.status = 'delivered' THEN NULL ELSE COALESCE(u.err, e.last_error) END, \
                       delivered_at = CASE WHEN u.status = 'delivered' THEN now() ELSE e.delivered_at END \
                     FROM u JOIN hit ON hit.tenant_id = u.tenant_id AND hit.email_id = u.id \
                     WHERE e.tenant_id = u.tenant_id AND e.id = u.id AND u.status <> 'queued') \
             SELECT tenant_id, email_id FROM hit",
        )
        .bind::<Array<SqlUuid>, _>(&t)
        .bind::<Array<SqlUuid>, _>(&e)
        .bind::<Array<BigInt>, _>(&f)
        .bind::<Array<Text>, _>(&statuses)
        .bind::<Array<Nullable<Text>>, _>(&responses)
        .bind::<Array<Nullable<Text>>, _>(&errors)
        .bind::<Array<Nullable<Timestamptz>>, _>(&next)
        .load(conn)?;
        let changed: HashSet<(Uuid, Uuid)> =
            changed.into_iter().map(|r| (r.tenant_id, r.email_id)).collect();
        let now = Utc::now();
        let mine: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| changed.contains(&(o.lease.tenant_id, o.lease.email_id)))
            .collect();
        let updates: Vec<(Uuid, Uuid, &Update)> = mine
            .iter()
            .flat_map(|o| {
                o.recipients
                    .iter()
                    .map(|r| (o.lease.tenant_id, o.lease.email_id, &r.update))
            })
            .collect();
        recipients::apply(conn, &updates)?;
        let failed: Vec<(Uuid, Uuid)> = mine
            .iter()
            .filter(|o| matches!(o.resolution, Resolution::Failed { .. }))
            .map(|o| (o.lease.tenant_id, o.lease.email_id))
            .collect();
        recipients::fail_pending(conn, &failed)?;
        let suppress: Vec<NewSuppression> = mine
            .iter()
            .flat_map(|o| {
                o.recipients.iter().filter_map(|r| {
                    r.suppress.map(|expires_at| NewSuppression {
                        tenant_id: o.lease.tenant_id,
                        email: r.update.recipient.clone(),
                        reason: "hard_bounce",
                        expires_at,
                        source_email_id: Some(o.lease.email_id),
                        detail: r.update.smtp_response.clone(),
                    })
                })
            })
            .collect();
        suppressions::upsert(conn, &suppress)?;
        let mut events: Vec<NewEvent> = Vec::new();
        for o in &mine {
            // `email.bounced` is per recipient (API.md); the message's own
            // bounce event only for messages without recipient rows.
            let mut per_recipient = false;
            for r in o.recipients.iter().filter(|r| r.update.status == "bounced") {
                per_recipient = true;
                events.push(NewEvent {
                    tenant_id: o.lease.tenant_id,
                    email_id: o.lease.email_id,
                    kind: "email.bounced".into(),
                    detail: serde_json::json!({
                        "attempt": o.attempt,
                        "recipient": r.update.recipient,
                        "bounce": r.update.bounce,
                        "smtp_response": r.update.smtp_response,
                    }),
                    at: now,
                });
            }
            let Some(kind) = o.resolution.event() else { continue };
            if kind == "email.bounced" && per_recipient {
                continue;
            }
            events.push(NewEvent {
                tenant_id: o.lease.tenant_id,
                email_id: o.lease.email_id,
                kind: kind.to_string(),
                detail: event_detail(o),
                at: now,
            });
        }
        let mut webhook_rows = 0;
        if !events.is_empty() {
            diesel::insert_into(email_events::table).values(&events).execute(conn)?;
            webhook_rows = crate::webhooks::outbox::enqueue(conn, &events)?;
        }
        let shard = usage::pick_shard();
        usage::add(conn, now.date_naive(), shard, &terminal_counts(outcomes, &changed))?;
        let by_stream = terminal_items(outcomes, &changed);
        crate::usage::streams::add_for_emails(conn, now.date_naive(), shard, &by_stream)?;
        crate::reputation::track::outcomes(conn, &mine)?;
        Ok(Recorded {
            changed: changed.into_iter().collect(),
            webhook_rows,
        })
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
        .filter(|o| changed.contains(&(o.lease.tenant_id, o.lease.email_id)))
    {
        let c = deltas.entry(o.lease.tenant_id).or_default();
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

/// Terminal outcomes per message, for usage by stream (issue 26).
fn terminal_items(
    outcomes: &[Outcome],
    changed: &HashSet<(Uuid, Uuid)>,
) -> Vec<(Uuid, Uuid, crate::usage::streams::Counter)> {
    use crate::usage::streams::Counter;
    outcomes
        .iter()
        .filter(|o| changed.contains(&(o.lease.tenant_id, o.lease.email_id)))
        .filter_map(|o| {
            let c = match o.resolution {
                Resolution::Delivered { .. } => Counter::Delivered,
                Resolution::Bounced { .. } => Counter::Bounced,
                Resolution::Failed { .. } => Counter::Failed,
                Resolution::Deferred { .. } | Resolution::Requeued { .. } => return None,
            };
            Some((o.lease.tenant_id, o.lease.email_id, c))
        })
        .collect()
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
