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

use super::model::{self, Owner, WebhookRow};
use crate::db::pagination::{Cursor, PageRequest};

/// A delivery (a row of `webhook_deliveries`, or of
/// `platform_webhook_deliveries` for a platform endpoint, where `tenant_id`
/// is the event's tenant, `None` for a ping).
#[derive(Clone, Debug, QueryableByName)]
pub struct DeliveryRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub webhook_id: Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub tenant_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub email_id: Option<Uuid>,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Jsonb)]
    pub payload: serde_json::Value,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub next_attempt_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Int4>)]
    pub last_status_code: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
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

#[derive(Clone, Debug, QueryableByName)]
pub struct AttemptRow {
    #[diesel(sql_type = SqlUuid)]
    pub delivery_id: Uuid,
    #[diesel(sql_type = Int4)]
    pub attempt: i32,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Int4>)]
    pub status_code: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = Int4)]
    pub duration_ms: i32,
}

/// The deliveries and attempts tables of an owner's endpoints, and the
/// owner condition on them (`$1` is the tenant; always true for the
/// platform, whose tables hold nothing else).
struct Tables {
    deliveries: &'static str,
    attempts: &'static str,
    tenant: Option<Uuid>,
}

fn tables(owner: Owner) -> Tables {
    match owner {
        Owner::Tenant(t) => Tables {
            deliveries: "webhook_deliveries",
            attempts: "webhook_attempts",
            tenant: Some(t.0),
        },
        Owner::Platform => Tables {
            deliveries: "platform_webhook_deliveries",
            attempts: "platform_webhook_attempts",
            tenant: None,
        },
    }
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, tenant_id, email_id, event_type, payload, status, \
    attempts, next_attempt_at, last_status_code, last_error, created_at, completed_at";

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

/// Gives a claimed delivery back unattempted (its cluster-wide slot was
/// refused, `super::shared`): the attempt the claim counted is taken back and
/// it is due now. Only while it is still that attempt and pending (a lease
/// that ran out may have been claimed again).
pub fn give_back(conn: &mut PgConnection, c: &Claimed) -> QueryResult<usize> {
    let t = tables(c.endpoint_owner());
    diesel::sql_query(format!(
        "UPDATE {} SET attempts = attempts - 1, next_attempt_at = now() \
         WHERE ($3::uuid IS NULL OR tenant_id = $3) AND id = $1 AND attempts = $2 \
         AND status = 'pending'",
        t.deliveries
    ))
    .bind::<SqlUuid, _>(c.id)
    .bind::<Int4, _>(c.attempts)
    .bind::<diesel::sql_types::Nullable<SqlUuid>, _>(t.tenant)
    .execute(conn)
}

impl Claimed {
    /// Whose endpoint it was sent to.
    pub fn endpoint_owner(&self) -> Owner {
        if self.owner == PLATFORM_OWNER {
            Owner::Platform
        } else {
            Owner::Tenant(crate::domain::TenantId(self.owner))
        }
    }
}

/// The all-zero id the claim groups platform endpoints under: the
/// platform is one owner like any tenant.
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

/// Whether either outbox has a delivery due: one fixed text, kept prepared,
/// through the partial indexes of pending rows. The claim below is planned
/// at every call (about 1 ms) and the dispatcher wakes on ingest commits (at
/// most every `dispatcher::MIN_WAKE_GAP`), so an empty outbox cost that much per wake.
fn any_due(conn: &mut PgConnection) -> QueryResult<bool> {
    crate::db::prepared::query(
        "SELECT EXISTS (SELECT 1 FROM webhook_deliveries \
                        WHERE status = 'pending' AND next_attempt_at <= now()) \
             OR EXISTS (SELECT 1 FROM platform_webhook_deliveries \
                        WHERE status = 'pending' AND next_attempt_at <= now()) AS flag",
    )
    .flag(conn)
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
    if !any_due(conn)? {
        return Ok(Vec::new());
    }
    let (hook_ids, hook_n): (Vec<Uuid>, Vec<i32>) = l.busy_endpoints.iter().copied().unzip();
    let (owner_ids, owner_n): (Vec<Uuid>, Vec<i32>) = l.busy_owners.iter().copied().unzip();
    // One scan per outbox (the tenants' and the platform's), each locking
    // its candidates; the caps then rank them together.
    diesel::sql_query(
        "WITH busy_hooks AS (SELECT * FROM unnest($3::uuid[], $4::int[]) AS b(id, n)), \
              busy_owners AS (SELECT * FROM unnest($5::uuid[], $6::int[]) AS b(id, n)), \
         due_t AS ( \
           SELECT d.id, d.webhook_id, d.next_attempt_at, d.tenant_id AS owner, false AS platform \
           FROM webhook_deliveries d \
           WHERE d.status = 'pending' AND d.next_attempt_at <= now() \
             AND d.webhook_id NOT IN (SELECT id FROM busy_hooks WHERE n >= $7) \
             AND d.tenant_id NOT IN (SELECT id FROM busy_owners WHERE n >= $8) \
           ORDER BY d.next_attempt_at \
           LIMIT $9 \
           FOR UPDATE OF d SKIP LOCKED), \
         due_p AS ( \
           SELECT d.id, d.webhook_id, d.next_attempt_at, \
                  '00000000-0000-0000-0000-000000000000'::uuid AS owner, true AS platform \
           FROM platform_webhook_deliveries d \
           WHERE d.status = 'pending' AND d.next_attempt_at <= now() \
             AND d.webhook_id NOT IN (SELECT id FROM busy_hooks WHERE n >= $7) \
             AND '00000000-0000-0000-0000-000000000000'::uuid \
                 NOT IN (SELECT id FROM busy_owners WHERE n >= $8) \
           ORDER BY d.next_attempt_at \
           LIMIT $9 \
           FOR UPDATE OF d SKIP LOCKED), \
         due AS (SELECT * FROM due_t UNION ALL SELECT * FROM due_p), \
         ranked AS ( \
           SELECT due.id, due.owner, due.platform, due.next_attempt_at, \
             row_number() OVER (PARTITION BY due.webhook_id ORDER BY due.next_attempt_at) \
               + COALESCE(h.n, 0) AS hook_n, \
             row_number() OVER (PARTITION BY due.owner ORDER BY due.next_attempt_at) \
               + COALESCE(o.n, 0) AS owner_n \
           FROM due LEFT JOIN busy_hooks h ON h.id = due.webhook_id \
                    LEFT JOIN busy_owners o ON o.id = due.owner), \
         picked AS ( \
           SELECT id, owner, platform FROM ranked WHERE hook_n <= $7 AND owner_n <= $8 \
           ORDER BY next_attempt_at LIMIT $1), \
         up_t AS ( \
           UPDATE webhook_deliveries AS d \
           SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2) \
           FROM picked, webhooks AS w \
           WHERE NOT picked.platform AND d.tenant_id = picked.owner AND d.id = picked.id \
             AND w.tenant_id = d.tenant_id AND w.id = d.webhook_id \
           RETURNING d.id, d.webhook_id, d.tenant_id AS owner, \
             d.payload, d.attempts, d.created_at, w.url, w.secret_enc, w.enabled), \
         up_p AS ( \
           UPDATE platform_webhook_deliveries AS d \
           SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2) \
           FROM picked, platform_webhooks AS w \
           WHERE picked.platform AND d.id = picked.id AND w.id = d.webhook_id \
           RETURNING d.id, d.webhook_id, '00000000-0000-0000-0000-000000000000'::uuid AS owner, \
             d.payload, d.attempts, d.created_at, w.url, w.secret_enc, w.enabled) \
         SELECT * FROM up_t UNION ALL SELECT * FROM up_p",
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
    /// The endpoint's owner (which outbox the delivery is in).
    pub owner: Owner,
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
    let gone: Vec<(Owner, Uuid)> = attempts
        .iter()
        .filter(|a| a.next == Next::Gone)
        .map(|a| (a.owner, a.webhook_id))
        .collect();
    conn.transaction(|conn| {
        let (platform, tenants): (Vec<&Attempt>, Vec<&Attempt>) =
            attempts.iter().partition(|a| a.owner == Owner::Platform);
        record_in(conn, true, &platform)?;
        record_in(conn, false, &tenants)?;
        if !gone.is_empty() {
            model::disable(conn, &gone, "the endpoint answered 410 Gone")?;
        }
        Ok(())
    })
}

/// Records attempts in one outbox: the platform's, or the tenants' (many
/// tenants at once, each row with its tenant).
fn record_in(conn: &mut PgConnection, platform: bool, attempts: &[&Attempt]) -> QueryResult<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let tenants: Vec<Uuid> = attempts
        .iter()
        .map(|a| match a.owner {
            Owner::Tenant(t) => t.0,
            Owner::Platform => Uuid::nil(),
        })
        .collect();
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
    // The tenants' rows are keyed (tenant_id, id); the platform's by id.
    let (t, cols, vals, on_tenant) = if platform {
        (tables(Owner::Platform), "", "", "")
    } else {
        (
            tables(Owner::Tenant(crate::domain::TenantId(Uuid::nil()))),
            "tenant_id, ",
            "u.tenant, ",
            "d.tenant_id = u.tenant AND ",
        )
    };
    diesel::sql_query(format!(
        "INSERT INTO {a} ({cols}delivery_id, attempt, status_code, error, duration_ms) \
         SELECT {vals}u.id, u.attempt, u.code, u.err, u.ms \
         FROM unnest($1, $2, $3, $4, $5, $6) AS u(tenant, id, attempt, code, err, ms) \
         ON CONFLICT DO NOTHING",
        a = t.attempts
    ))
    .bind::<Array<SqlUuid>, _>(&tenants)
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Int4>, _>(&numbers)
    .bind::<Array<Nullable<Int4>>, _>(&codes)
    .bind::<Array<Nullable<Text>>, _>(&errors)
    .bind::<Array<Int4>, _>(&durations)
    .execute(conn)?;
    diesel::sql_query(format!(
        "UPDATE {d} AS d SET \
           status = u.status, \
           next_attempt_at = COALESCE(u.next, d.next_attempt_at), \
           last_status_code = u.code, \
           last_error = u.err, \
           completed_at = CASE WHEN u.status = 'pending' THEN NULL ELSE now() END \
         FROM unnest($1, $2, $3, $4, $5, $6, $7) AS u(tenant, id, attempt, status, next, code, err) \
         WHERE {on_tenant}d.id = u.id AND d.status = 'pending' AND d.attempts = u.attempt",
        d = t.deliveries
    ))
    .bind::<Array<SqlUuid>, _>(&tenants)
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Int4>, _>(&numbers)
    .bind::<Array<Text>, _>(&statuses)
    .bind::<Array<Nullable<Timestamptz>>, _>(&next)
    .bind::<Array<Nullable<Int4>>, _>(&codes)
    .bind::<Array<Nullable<Text>>, _>(&errors)
    .execute(conn)?;
    Ok(())
}

/// A delivery made outside the outbox (the test ping) to `webhook`,
/// already leased to the caller as attempt 1.
pub fn insert_leased(
    conn: &mut PgConnection,
    webhook: &WebhookRow,
    row: &DeliveryRow,
) -> QueryResult<()> {
    let t = tables(webhook.owner());
    diesel::sql_query(format!(
        "INSERT INTO {d} ({DELIVERY_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        d = t.deliveries
    ))
    .bind::<SqlUuid, _>(row.id)
    .bind::<SqlUuid, _>(row.webhook_id)
    .bind::<Nullable<SqlUuid>, _>(row.tenant_id)
    .bind::<Nullable<SqlUuid>, _>(row.email_id)
    .bind::<Text, _>(&row.event_type)
    .bind::<Jsonb, _>(&row.payload)
    .bind::<Text, _>(&row.status)
    .bind::<Int4, _>(row.attempts)
    .bind::<Timestamptz, _>(row.next_attempt_at)
    .bind::<Nullable<Int4>, _>(row.last_status_code)
    .bind::<Nullable<Text>, _>(row.last_error.as_deref())
    .bind::<Timestamptz, _>(row.created_at)
    .bind::<Nullable<Timestamptz>, _>(row.completed_at)
    .execute(conn)
    .map(|_| ())
}

/// `($1 IS NULL OR tenant_id = $1)`: the owner condition; the platform's
/// tables hold only its own rows.
const OWNED: &str = "($1::uuid IS NULL OR tenant_id = $1)";

/// A page of an endpoint's deliveries, newest first. `webhook` is the
/// owner-checked row, so this never crosses tenants.
pub fn list(
    conn: &mut PgConnection,
    webhook: &WebhookRow,
    page: PageRequest,
) -> QueryResult<Vec<DeliveryRow>> {
    let t = tables(webhook.owner());
    let (after_at, after_id) = match page.after {
        Some(c) => (Some(c.created_at), Some(c.id)),
        None => (None, None),
    };
    diesel::sql_query(format!(
        "SELECT {DELIVERY_COLUMNS} FROM {d} \
         WHERE {OWNED} AND webhook_id = $2 \
           AND ($3::timestamptz IS NULL OR created_at < $3 OR (created_at = $3 AND id < $4)) \
         ORDER BY created_at DESC, id DESC LIMIT $5",
        d = t.deliveries
    ))
    .bind::<Nullable<SqlUuid>, _>(t.tenant)
    .bind::<SqlUuid, _>(webhook.id)
    .bind::<Nullable<Timestamptz>, _>(after_at)
    .bind::<Nullable<SqlUuid>, _>(after_id)
    .bind::<BigInt, _>(page.limit + 1)
    .load(conn)
}

/// The attempts of these deliveries of the owner's endpoints, oldest first.
pub fn attempts_of(
    conn: &mut PgConnection,
    owner: Owner,
    deliveries: &[Uuid],
) -> QueryResult<Vec<AttemptRow>> {
    let t = tables(owner);
    // The platform's attempts carry no tenant at all.
    let owned = if t.tenant.is_some() {
        "tenant_id = $1"
    } else {
        "$1::uuid IS NULL"
    };
    diesel::sql_query(format!(
        "SELECT delivery_id, attempt, at, status_code, error, duration_ms FROM {a} \
         WHERE {owned} AND delivery_id = ANY($2) ORDER BY delivery_id, attempt",
        a = t.attempts
    ))
    .bind::<Nullable<SqlUuid>, _>(t.tenant)
    .bind::<Array<SqlUuid>, _>(deliveries)
    .load(conn)
}

/// One delivery of an owner-checked endpoint.
pub fn find(
    conn: &mut PgConnection,
    webhook: &WebhookRow,
    id: Uuid,
) -> QueryResult<Option<DeliveryRow>> {
    let t = tables(webhook.owner());
    diesel::sql_query(format!(
        "SELECT {DELIVERY_COLUMNS} FROM {d} WHERE {OWNED} AND webhook_id = $2 AND id = $3",
        d = t.deliveries
    ))
    .bind::<Nullable<SqlUuid>, _>(t.tenant)
    .bind::<SqlUuid, _>(webhook.id)
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .optional()
}

/// One delivery of the owner's endpoints, by its id alone (the console's
/// retry): another owner's delivery is `None`, like a missing one.
pub fn find_for_owner(
    conn: &mut PgConnection,
    owner: Owner,
    id: Uuid,
) -> QueryResult<Option<DeliveryRow>> {
    let t = tables(owner);
    diesel::sql_query(format!(
        "SELECT {DELIVERY_COLUMNS} FROM {d} WHERE {OWNED} AND id = $2",
        d = t.deliveries
    ))
    .bind::<Nullable<SqlUuid>, _>(t.tenant)
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .optional()
}

/// Puts a failed delivery of an owner-checked endpoint back in the outbox,
/// due now (its attempts keep counting). 0 when it is not failed (any more).
pub fn requeue(conn: &mut PgConnection, webhook: &WebhookRow, id: Uuid) -> QueryResult<usize> {
    let t = tables(webhook.owner());
    diesel::sql_query(format!(
        "UPDATE {d} SET status = 'pending', next_attempt_at = now(), completed_at = NULL \
         WHERE {OWNED} AND webhook_id = $2 AND id = $3 AND status = 'failed'",
        d = t.deliveries
    ))
    .bind::<Nullable<SqlUuid>, _>(t.tenant)
    .bind::<SqlUuid, _>(webhook.id)
    .bind::<SqlUuid, _>(id)
    .execute(conn)
}

/// Drops finished deliveries (and their attempts) older than `days`: the
/// log is for debugging recent traffic, not an archive.
pub fn purge_finished(conn: &mut PgConnection, days: u32) -> QueryResult<usize> {
    let mut n = 0;
    for d in ["webhook_deliveries", "platform_webhook_deliveries"] {
        n += diesel::sql_query(format!(
            "DELETE FROM {d} \
             WHERE status <> 'pending' AND completed_at < now() - make_interval(days => $1)"
        ))
        .bind::<Int4, _>(i32::try_from(days).unwrap_or(i32::MAX))
        .execute(conn)?;
    }
    Ok(n)
}
