//! Reputation SQL: the hourly buckets (one upsert per recorded batch), the
//! figures read from them, and the `tenant_reputation` state rows. Every
//! query takes `tenant_id` except the checker's walk and the admin listing.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Date, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use uuid::Uuid;

use super::policy::Counts;

/// One message's change to its tenant's figures (recipients).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub tenant_id: Uuid,
    pub email_id: Uuid,
    pub delivered: i32,
    pub hard_bounced: i32,
    pub complained: i32,
}

/// Adds `deltas` to the current hour's buckets, each under its message's
/// sending (From) domain: one statement, rows in key order (no deadlock
/// between concurrent recorders). Called in the transaction that records
/// the outcomes.
pub fn add(conn: &mut PgConnection, deltas: &[Delta]) -> QueryResult<()> {
    let deltas: Vec<&Delta> = deltas
        .iter()
        .filter(|d| d.delivered != 0 || d.hard_bounced != 0 || d.complained != 0)
        .collect();
    if deltas.is_empty() {
        return Ok(());
    }
    let t: Vec<Uuid> = deltas.iter().map(|d| d.tenant_id).collect();
    let e: Vec<Uuid> = deltas.iter().map(|d| d.email_id).collect();
    let d: Vec<i32> = deltas.iter().map(|d| d.delivered).collect();
    let b: Vec<i32> = deltas.iter().map(|d| d.hard_bounced).collect();
    let c: Vec<i32> = deltas.iter().map(|d| d.complained).collect();
    diesel::sql_query(
        "INSERT INTO reputation_hourly AS h (tenant_id, hour, domain, delivered, hard_bounced, complained) \
         SELECT u.tenant_id, date_trunc('hour', now()), \
                COALESCE(lower(substring(e.from_addr from '@([^@<>[:space:]]+)>?[[:space:]]*$')), ''), \
                sum(u.d), sum(u.b), sum(u.c) \
         FROM unnest($1, $2, $3, $4, $5) AS u(tenant_id, email_id, d, b, c) \
         LEFT JOIN emails e ON e.tenant_id = u.tenant_id AND e.id = u.email_id \
         GROUP BY 1, 2, 3 ORDER BY 1, 3 \
         ON CONFLICT (tenant_id, hour, domain) DO UPDATE SET \
           delivered = h.delivered + excluded.delivered, \
           hard_bounced = h.hard_bounced + excluded.hard_bounced, \
           complained = h.complained + excluded.complained",
    )
    .bind::<Array<SqlUuid>, _>(&t)
    .bind::<Array<SqlUuid>, _>(&e)
    .bind::<Array<Integer>, _>(&d)
    .bind::<Array<Integer>, _>(&b)
    .bind::<Array<Integer>, _>(&c)
    .execute(conn)?;
    Ok(())
}

/// The first bucket an `hours` window counts, for a tenant reinstated at
/// `since` (buckets before it never count again).
const LOWER: &str = "GREATEST(date_trunc('hour', now()) - make_interval(hours => $2 - 1), \
     date_trunc('hour', COALESCE($3, '-infinity'::timestamptz)))";

#[derive(QueryableByName)]
struct SumRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    delivered: i64,
    #[diesel(sql_type = BigInt)]
    hard_bounced: i64,
    #[diesel(sql_type = BigInt)]
    complained: i64,
}

impl SumRow {
    fn counts(&self) -> Counts {
        Counts {
            delivered: self.delivered.max(0),
            hard_bounced: self.hard_bounced.max(0),
            complained: self.complained.max(0),
        }
    }
}

/// A tenant's figures over the last `hours` hours (the current one
/// included), from `since` on.
pub fn window(
    conn: &mut PgConnection,
    tenant: Uuid,
    hours: i32,
    since: Option<DateTime<Utc>>,
) -> QueryResult<Counts> {
    let rows: Vec<SumRow> = diesel::sql_query(format!(
        "SELECT '' AS name, COALESCE(sum(delivered), 0)::bigint AS delivered, \
                COALESCE(sum(hard_bounced), 0)::bigint AS hard_bounced, \
                COALESCE(sum(complained), 0)::bigint AS complained \
         FROM reputation_hourly WHERE tenant_id = $1 AND hour >= {LOWER}"
    ))
    .bind::<SqlUuid, _>(tenant)
    .bind::<Integer, _>(hours)
    .bind::<Nullable<Timestamptz>, _>(since)
    .load(conn)?;
    Ok(rows.first().map(SumRow::counts).unwrap_or_default())
}

/// Per sending domain over the window, worst bounce count first (at most 100).
pub fn domains(
    conn: &mut PgConnection,
    tenant: Uuid,
    hours: i32,
    since: Option<DateTime<Utc>>,
) -> QueryResult<Vec<(String, Counts)>> {
    let rows: Vec<SumRow> = diesel::sql_query(format!(
        "SELECT domain AS name, sum(delivered)::bigint AS delivered, \
                sum(hard_bounced)::bigint AS hard_bounced, sum(complained)::bigint AS complained \
         FROM reputation_hourly WHERE tenant_id = $1 AND hour >= {LOWER} \
         GROUP BY domain ORDER BY sum(hard_bounced) + sum(complained) DESC, domain LIMIT 100"
    ))
    .bind::<SqlUuid, _>(tenant)
    .bind::<Integer, _>(hours)
    .bind::<Nullable<Timestamptz>, _>(since)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.name.clone(), r.counts()))
        .collect())
}

#[derive(QueryableByName)]
struct DayRow {
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = BigInt)]
    delivered: i64,
    #[diesel(sql_type = BigInt)]
    hard_bounced: i64,
    #[diesel(sql_type = BigInt)]
    complained: i64,
}

/// The last 30 days (UTC), oldest first, days without figures included.
pub fn daily(conn: &mut PgConnection, tenant: Uuid) -> QueryResult<Vec<(NaiveDate, Counts)>> {
    // A bucket moved aside by a reinstatement sits 1 µs before its hour.
    let rows: Vec<DayRow> = diesel::sql_query(
        "SELECT d::date AS day, COALESCE(sum(h.delivered), 0)::bigint AS delivered, \
                COALESCE(sum(h.hard_bounced), 0)::bigint AS hard_bounced, \
                COALESCE(sum(h.complained), 0)::bigint AS complained \
         FROM generate_series(date_trunc('day', now() AT TIME ZONE 'UTC') - interval '29 days', \
                              date_trunc('day', now() AT TIME ZONE 'UTC'), interval '1 day') AS d \
         LEFT JOIN reputation_hourly h ON h.tenant_id = $1 \
           AND h.hour >= (d AT TIME ZONE 'UTC') - interval '1 microsecond' \
           AND h.hour < ((d + interval '1 day') AT TIME ZONE 'UTC') - interval '1 microsecond' \
         GROUP BY d ORDER BY d",
    )
    .bind::<SqlUuid, _>(tenant)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.day,
                Counts {
                    delivered: r.delivered.max(0),
                    hard_bounced: r.hard_bounced.max(0),
                    complained: r.complained.max(0),
                },
            )
        })
        .collect())
}

/// A tenant's reputation state (absent row = healthy).
#[derive(Clone, Debug, QueryableByName)]
pub struct StateRow {
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub reason: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub paused_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub reinstated_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub policy: Option<serde_json::Value>,
}

const STATE: &str = "SELECT t.id AS tenant_id, COALESCE(r.status, 'healthy') AS status, r.reason, \
     r.paused_at, r.reinstated_at, t.reputation_policy AS policy \
     FROM tenants t LEFT JOIN tenant_reputation r ON r.tenant_id = t.id \
     WHERE t.deleted_at IS NULL";

/// A live tenant's state and policy override.
pub fn state(conn: &mut PgConnection, tenant: Uuid) -> QueryResult<Option<StateRow>> {
    diesel::sql_query(format!("{STATE} AND t.id = $1"))
        .bind::<SqlUuid, _>(tenant)
        .get_result(conn)
        .optional()
}

/// The tenants with figures in the last 7 days or a state other than
/// healthy: those the checker decides on (bounded by `limit`).
pub fn candidates(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<StateRow>> {
    diesel::sql_query(format!(
        "{STATE} AND t.id IN (SELECT tenant_id FROM reputation_hourly \
                               WHERE hour >= now() - interval '169 hours' \
                             UNION SELECT tenant_id FROM tenant_reputation WHERE status <> 'healthy') \
         ORDER BY t.id LIMIT $1"
    ))
    .bind::<BigInt, _>(limit)
    .load(conn)
}

/// Tenants in `status` (warning or paused), for the admin listing; their
/// order is the caller's (by complaint rate).
pub fn with_status(
    conn: &mut PgConnection,
    status: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<StateRow>> {
    diesel::sql_query(format!(
        "{STATE} AND ($1::text IS NULL AND r.status IS NOT NULL AND r.status <> 'healthy' OR r.status = $1) \
         ORDER BY t.id LIMIT $2"
    ))
    .bind::<Nullable<Text>, _>(status)
    .bind::<BigInt, _>(limit)
    .load(conn)
}

/// A tenant in `warning` or `paused`, named: the console's tenant list
/// shows these first.
#[derive(Clone, Debug, QueryableByName, serde::Serialize)]
pub struct Flagged {
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub reason: Option<String>,
}

/// Live tenants in `paused` (first) or `warning`, then by name; at most
/// `limit`.
pub fn flagged(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<Flagged>> {
    diesel::sql_query(
        "SELECT t.id AS tenant_id, t.name, r.status, r.reason \
         FROM tenant_reputation r JOIN tenants t ON t.id = r.tenant_id \
         WHERE r.status IN ('warning', 'paused') AND t.deleted_at IS NULL \
         ORDER BY r.status = 'paused' DESC, t.name, t.id LIMIT $1",
    )
    .bind::<BigInt, _>(limit)
    .load(conn)
}

/// Moves to `to` unless already there (or, for `warning`/`healthy`, unless
/// paused: only a reinstatement ends a pause). Returns whether it changed:
/// concurrent checkers on several nodes change a tenant once.
pub fn transition(
    conn: &mut PgConnection,
    tenant: Uuid,
    to: &str,
    reason: Option<&str>,
) -> QueryResult<bool> {
    let n = diesel::sql_query(
        "INSERT INTO tenant_reputation AS r (tenant_id, status, reason, paused_at, changed_at) \
         VALUES ($1, $2, $3, CASE WHEN $2 = 'paused' THEN now() END, now()) \
         ON CONFLICT (tenant_id) DO UPDATE SET status = excluded.status, reason = excluded.reason, \
           paused_at = COALESCE(excluded.paused_at, r.paused_at), changed_at = now() \
         WHERE r.status <> excluded.status AND r.status <> 'paused'",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(to)
    .bind::<Nullable<Text>, _>(reason)
    .execute(conn)?;
    Ok(n == 1)
}

/// Reinstates a tenant: healthy from now, and the current hour's buckets
/// moved 1 µs before the hour so that no window counts them again.
pub fn reinstate(conn: &mut PgConnection, tenant: Uuid) -> QueryResult<DateTime<Utc>> {
    #[derive(QueryableByName)]
    struct At {
        #[diesel(sql_type = Timestamptz)]
        at: DateTime<Utc>,
    }
    let at: At = diesel::sql_query(
        "INSERT INTO tenant_reputation AS r (tenant_id, status, reinstated_at, changed_at) \
         VALUES ($1, 'healthy', now(), now()) \
         ON CONFLICT (tenant_id) DO UPDATE SET status = 'healthy', reason = NULL, \
           reinstated_at = now(), changed_at = now() \
         RETURNING reinstated_at AS at",
    )
    .bind::<SqlUuid, _>(tenant)
    .get_result(conn)?;
    diesel::sql_query(
        "WITH moved AS (DELETE FROM reputation_hourly WHERE tenant_id = $1 AND hour = date_trunc('hour', now()) \
                        RETURNING tenant_id, hour, domain, delivered, hard_bounced, complained) \
         INSERT INTO reputation_hourly AS h (tenant_id, hour, domain, delivered, hard_bounced, complained) \
         SELECT tenant_id, hour - interval '1 microsecond', domain, delivered, hard_bounced, complained \
         FROM moved ORDER BY domain \
         ON CONFLICT (tenant_id, hour, domain) DO UPDATE SET \
           delivered = h.delivered + excluded.delivered, \
           hard_bounced = h.hard_bounced + excluded.hard_bounced, \
           complained = h.complained + excluded.complained",
    )
    .bind::<SqlUuid, _>(tenant)
    .execute(conn)?;
    Ok(at.at)
}

/// Paused tenants and why: what the send paths' gate holds in memory.
pub fn paused(conn: &mut PgConnection) -> QueryResult<Vec<(Uuid, String)>> {
    #[derive(QueryableByName)]
    struct P {
        #[diesel(sql_type = SqlUuid)]
        tenant_id: Uuid,
        #[diesel(sql_type = Nullable<Text>)]
        reason: Option<String>,
    }
    let rows: Vec<P> = diesel::sql_query(
        "SELECT tenant_id, reason FROM tenant_reputation WHERE status = 'paused' LIMIT 100000",
    )
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|p| (p.tenant_id, p.reason.unwrap_or_default()))
        .collect())
}

/// Buckets older than 32 days are no figure any more; bounded per call.
pub fn purge(conn: &mut PgConnection) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM reputation_hourly WHERE ctid = ANY(ARRAY( \
           SELECT ctid FROM reputation_hourly WHERE hour < now() - interval '32 days' LIMIT 10000))",
    )
    .execute(conn)
}

/// `tenant.*` reputation webhooks: one outbox row per subscribed endpoint of
/// the tenant and of the platform, `data` = the reputation object.
pub fn enqueue_event(
    conn: &mut PgConnection,
    tenant: Uuid,
    kind: &str,
    data: &serde_json::Value,
) -> QueryResult<usize> {
    diesel::sql_query(crate::webhooks::outbox::to_outboxes(
        "SELECT gen_random_uuid(), w.id, t.id, NULL, $2, \
           jsonb_build_object( \
             'type', $2::text, \
             'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
             'data', $3::jsonb), \
           now(), now(), w.tenant_id IS NULL \
         FROM tenants t \
         JOIN webhook_subscribers w ON (w.tenant_id = t.id OR w.tenant_id IS NULL) AND w.enabled \
          AND ('*' = ANY (w.events) OR $2 = ANY (w.events)) \
         WHERE t.id = $1",
    ))
    .bind::<SqlUuid, _>(tenant)
    .bind::<Text, _>(kind)
    .bind::<Jsonb, _>(data)
    .execute(conn)
}
