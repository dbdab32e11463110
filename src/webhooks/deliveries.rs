//! `webhook_deliveries` (the outbox) and `webhook_attempts` (the log): the
//! dispatcher's claim with a lease, recording attempts, and the listing.
//! A claim pushes `next_attempt_at` forward by the lease, so one partial index
//! (`status = 'pending'`) finds both due rows and rows whose dispatcher died.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Double, Int4, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use uuid::Uuid;

use super::model::{self, WebhookRow};
use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::{webhook_attempts, webhook_deliveries};

#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhook_deliveries)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub email_id: Option<Uuid>,
    pub event_type: String,
    pub payload: serde_json::Value,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl DeliveryRow {
    pub fn position(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = webhook_attempts)]
pub struct AttemptRow {
    pub delivery_id: Uuid,
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
}

/// A delivery leased to this dispatcher, with what sending it needs.
#[derive(Clone, Debug, QueryableByName)]
pub struct Claimed {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub webhook_id: Uuid,
    /// The endpoint's tenant, or [`PLATFORM_OWNER`].
    #[diesel(sql_type = SqlUuid)]
    pub owner: Uuid,
    #[diesel(sql_type = Jsonb)]
    pub payload: serde_json::Value,
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Bytea)]
    pub secret_enc: Vec<u8>,
    #[diesel(sql_type = Bool)]
    pub enabled: bool,
}

/// The all-zero id the claim groups platform endpoints under (their
/// `tenant_id` is NULL): the platform is one owner like any tenant.
pub const PLATFORM_OWNER: Uuid = Uuid::nil();

/// What a claim may take, given what this dispatcher has in flight.
#[derive(Clone, Debug, Default)]
pub struct ClaimLimits {
    /// Rows to lease at most (the dispatcher's free slots).
    pub limit: i64,
    pub lease_secs: f64,
    /// In flight at once per endpoint, and per owner (tenant or platform).
    pub per_endpoint: i32,
    pub per_owner: i32,
    /// Endpoints and owners with deliveries in flight, and how many.
    pub busy_endpoints: Vec<(Uuid, i32)>,
    pub busy_owners: Vec<(Uuid, i32)>,
}

/// Leases due deliveries for `lease_secs`, counting the attempt, without
/// taking an endpoint past `per_endpoint` or an owner past `per_owner`
/// deliveries in flight (counting those already running): one tenant's
/// backlog for a slow endpoint cannot fill the dispatcher. Endpoints and
/// owners at their cap are skipped in the scan, so other tenants' rows are
/// found behind any backlog. The scan locks up to `8 × limit` candidates
/// (SKIP LOCKED, released at the end of the statement) and leases those
/// within the caps, oldest first per endpoint.
pub fn claim(conn: &mut PgConnection, l: &ClaimLimits) -> QueryResult<Vec<Claimed>> {
    let (hook_ids, hook_n): (Vec<Uuid>, Vec<i32>) = l.busy_endpoints.iter().copied().unzip();
    let (owner_ids, owner_n): (Vec<Uuid>, Vec<i32>) = l.busy_owners.iter().copied().unzip();
    diesel::sql_query(
        "WITH busy_hooks AS (SELECT * FROM unnest($3::uuid[], $4::int[]) AS b(id, n)), \
              busy_owners AS (SELECT * FROM unnest($5::uuid[], $6::int[]) AS b(id, n)), \
         due AS ( \
           SELECT d.id, d.webhook_id, d.next_attempt_at, \
                  COALESCE(w.tenant_id, '00000000-0000-0000-0000-000000000000'::uuid) AS owner \
           FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
           WHERE d.status = 'pending' AND d.next_attempt_at <= now() \
             AND d.webhook_id NOT IN (SELECT id FROM busy_hooks WHERE n >= $7) \
             AND COALESCE(w.tenant_id, '00000000-0000-0000-0000-000000000000'::uuid) \
                 NOT IN (SELECT id FROM busy_owners WHERE n >= $8) \
           ORDER BY d.next_attempt_at \
           LIMIT $9 \
           FOR UPDATE OF d SKIP LOCKED), \
         ranked AS ( \
           SELECT due.id, due.next_attempt_at, \
             row_number() OVER (PARTITION BY due.webhook_id ORDER BY due.next_attempt_at) \
               + COALESCE(h.n, 0) AS hook_n, \
             row_number() OVER (PARTITION BY due.owner ORDER BY due.next_attempt_at) \
               + COALESCE(o.n, 0) AS owner_n \
           FROM due LEFT JOIN busy_hooks h ON h.id = due.webhook_id \
                    LEFT JOIN busy_owners o ON o.id = due.owner), \
         picked AS ( \
           SELECT id FROM ranked WHERE hook_n <= $7 AND owner_n <= $8 \
           ORDER BY next_attempt_at LIMIT $1) \
         UPDATE webhook_deliveries AS d \
         SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2) \
         FROM picked, webhooks AS w \
         WHERE d.id = picked.id AND w.id = d.webhook_id \
         RETURNING d.id, d.webhook_id, \
           COALESCE(w.tenant_id, '00000000-0000-0000-0000-000000000000'::uuid) AS owner, \
           d.payload, d.attempts, d.created_at, w.url, w.secret_enc, w.enabled",
    )
    .bind::<BigInt, _>(l.limit)
    .bind::<Double, _>(l.lease_secs)
    .bind::<Array<SqlUuid>, _>(&hook_ids)
    .bind::<Array<Int4>, _>(&hook_n)
    .bind::<Array<SqlUuid>, _>(&owner_ids)
    .bind::<Array<Int4>, _>(&owner_n)
    .bind::<Int4, _>(l.per_endpoint)
    .bind::<Int4, _>(l.per_owner)
    .bind::<BigInt, _>(l.limit.saturating_mul(8).max(64))
    .load(conn)
}

/// What one attempt ended in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    Succeeded,
    Retry(DateTime<Utc>),
    Failed,
    /// 410 Gone: failed, and the endpoint is disabled.
    Gone,
}

/// One attempt to record.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub delivery_id: Uuid,
    pub webhook_id: Uuid,
    pub attempt: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub next: Next,
}

/// Logs the attempts and moves their deliveries on, in one transaction.
/// Only a delivery still at that attempt changes, so a dispatcher whose lease
/// ran out cannot overwrite the newer attempt of another.
pub fn record(conn: &mut PgConnection, attempts: &[Attempt]) -> QueryResult<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = attempts.iter().map(|a| a.delivery_id).collect();
    let numbers: Vec<i32> = attempts.iter().map(|a| a.attempt).collect();
    let codes: Vec<Option<i32>> = attempts.iter().map(|a| a.status_code).collect();
    let errors: Vec<Option<&str>> = attempts.iter().map(|a| a.error.as_deref()).collect();
    let durations: Vec<i32> = attempts.iter().map(|a| a.duration_ms).collect();
    let statuses: Vec<&str> = attempts
        .iter()
        .map(|a| match a.next {
            Next::Succeeded => "succeeded",
            Next::Retry(_) => "pending",
            Next::Failed | Next::Gone => "failed",
        })
        .collect();
    let next: Vec<Option<DateTime<Utc>>> = attempts
        .iter()
        .map(|a| match a.next {
            Next::Retry(at) => Some(at),
            _ => None,
        })
        .collect();
    let gone: Vec<Uuid> = attempts
        .iter()
        .filter(|a| a.next == Next::Gone)
        .map(|a| a.webhook_id)
        .collect();
    conn.transaction(|conn| {
        diesel::sql_query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, duration_ms) \
             SELECT * FROM unnest($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Int4>, _>(&numbers)
        .bind::<Array<Nullable<Int4>>, _>(&codes)
        .bind::<Array<Nullable<Text>>, _>(&errors)
        .bind::<Array<Int4>, _>(&durations)
        .execute(conn)?;
        diesel::sql_query(
            "UPDATE webhook_deliveries AS d SET \
               status = u.status, \
               next_attempt_at = COALESCE(u.next, d.next_attempt_at), \
               last_status_code = u.code, \
               last_error = u.err, \
               completed_at = CASE WHEN u.status = 'pending' THEN NULL ELSE now() END \
             FROM unnest($1, $2, $3, $4, $5, $6) AS u(id, attempt, status, next, code, err) \
             WHERE d.id = u.id AND d.status = 'pending' AND d.attempts = u.attempt",
        )
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Int4>, _>(&numbers)
        .bind::<Array<Text>, _>(&statuses)
        .bind::<Array<Nullable<Timestamptz>>, _>(&next)
        .bind::<Array<Nullable<Int4>>, _>(&codes)
        .bind::<Array<Nullable<Text>>, _>(&errors)
        .execute(conn)?;
        if !gone.is_empty() {
            model::disable(conn, &gone, "the endpoint answered 410 Gone")?;
        }
        Ok(())
    })
}

/// A delivery made outside the outbox (the test ping), already leased to
/// the caller as attempt 1.
pub fn insert_leased(conn: &mut PgConnection, row: &DeliveryRow) -> QueryResult<()> {
    diesel::insert_into(webhook_deliveries::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

/// A page of an endpoint's deliveries, newest first. `webhook` is the
/// owner-checked row, so this never crosses tenants.
pub fn list(
    conn: &mut PgConnection,
    webhook: &WebhookRow,
    page: PageRequest,
) -> QueryResult<Vec<DeliveryRow>> {
    let mut q = webhook_deliveries::table
        .filter(webhook_deliveries::webhook_id.eq(webhook.id))
        .select(DeliveryRow::as_select())
        .order((
            webhook_deliveries::created_at.desc(),
            webhook_deliveries::id.desc(),
        ))
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(c) = page.after {
        q = q.filter(
            webhook_deliveries::created_at
                .lt(c.created_at)
                .or(webhook_deliveries::created_at
                    .eq(c.created_at)
                    .and(webhook_deliveries::id.lt(c.id))),
        );
    }
    q.load(conn)
}

/// The attempts of these deliveries, oldest first.
pub fn attempts_of(conn: &mut PgConnection, deliveries: &[Uuid]) -> QueryResult<Vec<AttemptRow>> {
    webhook_attempts::table
        .filter(webhook_attempts::delivery_id.eq_any(deliveries))
        .order((webhook_attempts::delivery_id, webhook_attempts::attempt))
        .select(AttemptRow::as_select())
        .load(conn)
}

/// One delivery of an owner-checked endpoint.
pub fn find(
    conn: &mut PgConnection,
    webhook: &WebhookRow,
    id: Uuid,
) -> QueryResult<Option<DeliveryRow>> {
    webhook_deliveries::table
        .filter(webhook_deliveries::webhook_id.eq(webhook.id))
        .filter(webhook_deliveries::id.eq(id))
        .select(DeliveryRow::as_select())
        .first(conn)
        .optional()
}

/// One delivery of the owner's endpoints, by its id alone (the console's
/// retry): another owner's delivery is `None`, like a missing one.
pub fn find_for_owner(
    conn: &mut PgConnection,
    owner: model::Owner,
    id: Uuid,
) -> QueryResult<Option<DeliveryRow>> {
    let q = webhook_deliveries::table
        .filter(webhook_deliveries::id.eq(id))
        .select(DeliveryRow::as_select());
    match owner.tenant_id() {
        Some(t) => q.filter(webhook_deliveries::tenant_id.eq(t)).first(conn),
        None => q
            .filter(webhook_deliveries::tenant_id.is_null())
            .first(conn),
    }
    .optional()
}

/// Puts a failed delivery of an owner-checked endpoint back in the outbox,
/// due now (its attempts keep counting). 0 when it is not failed (any more).
pub fn requeue(conn: &mut PgConnection, webhook: &WebhookRow, id: Uuid) -> QueryResult<usize> {
    use webhook_deliveries::dsl as d;
    diesel::update(
        d::webhook_deliveries
            .filter(d::webhook_id.eq(webhook.id))
            .filter(d::id.eq(id))
            .filter(d::status.eq("failed")),
    )
    .set((
        d::status.eq("pending"),
        d::next_attempt_at.eq(diesel::dsl::now),
        d::completed_at.eq(None::<DateTime<Utc>>),
    ))
    .execute(conn)
}

/// Drops finished deliveries (and their attempts) older than `days`: the
/// log is for debugging recent traffic, not an archive.
pub fn purge_finished(conn: &mut PgConnection, days: u32) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM webhook_deliveries \
         WHERE status <> 'pending' AND completed_at < now() - make_interval(days => $1)",
    )
    .bind::<Int4, _>(i32::try_from(days).unwrap_or(i32::MAX))
    .execute(conn)
}
