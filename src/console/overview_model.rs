//! The overview's SQL (`pages/overview`): every statement bounded, and
//! scoped to one tenant when the page is a tenant user's (`tenant` is
//! `Some`); `None` is the platform, for admins.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Date, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

/// Messages of the last 24 hours counted per page view at most: past it
/// the page says it counted the newest this many.
pub const RECENT_CAP: i64 = 50_000;
/// Tenants listed as needing attention at most.
pub const ATTENTION_LIMIT: i64 = 20;
/// A bounce rate (of delivered + bounced over 7 days) from which a tenant
/// needs attention, in percent, once it had [`MIN_OUTCOMES`] outcomes.
pub const BOUNCE_RATE_PCT: i64 = 5;
pub const MIN_OUTCOMES: i64 = 20;
/// Complaints per thousand delivered from which a tenant needs attention.
pub const COMPLAINTS_PER_MILLE: i64 = 1;
/// Share of the daily cap, in percent, from which a tenant is "near quota".
pub const QUOTA_PCT: i64 = 90;

/// Messages created since a time, by hour and status (the status a reader
/// sees now), and how many of them drew a complaint.
#[derive(Debug, QueryableByName)]
pub struct RecentRow {
    #[diesel(sql_type = Timestamptz)]
    pub hour: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
    #[diesel(sql_type = BigInt)]
    pub complained: i64,
}

/// The newest `cap` messages (the page: [`RECENT_CAP`]) created since `since`, counted by hour
/// and status: an index range of `emails_listing` (or `emails_tenant_listing`
/// for a tenant), a complaint probe per delivered one by primary key.
pub fn recent(
    conn: &mut PgConnection,
    tenant: Option<Uuid>,
    since: DateTime<Utc>,
    cap: i64,
) -> QueryResult<Vec<RecentRow>> {
    let filter = if tenant.is_some() {
        "tenant_id = $3 AND created_at >= $1 ORDER BY created_at DESC"
    } else {
        "created_at >= $1 AND $3::uuid IS NULL ORDER BY created_at DESC"
    };
    diesel::sql_query(format!(
        "SELECT date_trunc('hour', r.created_at) AS hour, r.status, count(*)::bigint AS n, \
           count(*) FILTER (WHERE r.status = 'delivered' AND EXISTS (SELECT 1 FROM email_recipients x \
             WHERE x.tenant_id = r.tenant_id AND x.email_id = r.id AND x.status = 'complained'))::bigint AS complained \
         FROM (SELECT tenant_id, id, status, created_at FROM emails WHERE {filter} LIMIT $2) r \
         GROUP BY 1, 2"
    ))
    .bind::<Timestamptz, _>(since)
    .bind::<BigInt, _>(cap)
    .bind::<Nullable<SqlUuid>, _>(tenant)
    .load(conn)
}

/// The queue now: held, in flight, due, waiting (a retry or a schedule
/// ahead), and the earliest due time of what waits to be claimed.
#[derive(Debug, Default, QueryableByName, serde::Serialize)]
pub struct QueueNow {
    #[diesel(sql_type = BigInt)]
    pub total: i64,
    #[diesel(sql_type = BigInt)]
    pub held: i64,
    #[diesel(sql_type = BigInt)]
    pub sending: i64,
    #[diesel(sql_type = BigInt)]
    pub due: i64,
    #[diesel(sql_type = BigInt)]
    pub waiting: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub oldest_due: Option<DateTime<Utc>>,
}

/// One pass over `email_queue` (messages with work left only), or over one
/// tenant's rows of it by its primary key.
pub fn queue_now(conn: &mut PgConnection, tenant: Option<Uuid>) -> QueryResult<QueueNow> {
    diesel::sql_query(
        "SELECT count(*)::bigint AS total, count(*) FILTER (WHERE held)::bigint AS held, \
           count(*) FILTER (WHERE NOT held AND lease_until IS NOT NULL)::bigint AS sending, \
           count(*) FILTER (WHERE NOT held AND lease_until IS NULL AND next_attempt_at <= now())::bigint AS due, \
           count(*) FILTER (WHERE NOT held AND lease_until IS NULL AND next_attempt_at > now())::bigint AS waiting, \
           min(next_attempt_at) FILTER (WHERE NOT held AND lease_until IS NULL AND next_attempt_at <= now()) AS oldest_due \
         FROM email_queue WHERE $1::uuid IS NULL OR tenant_id = $1",
    )
    .bind::<Nullable<SqlUuid>, _>(tenant)
    .get_result(conn)
}

/// A tenant that needs attention, with the figures that say why.
#[derive(Debug, QueryableByName, serde::Serialize)]
pub struct Attention {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = BigInt)]
    pub delivered: i64,
    #[diesel(sql_type = BigInt)]
    pub bounced: i64,
    #[diesel(sql_type = BigInt)]
    pub complained: i64,
    #[diesel(sql_type = BigInt)]
    pub sent_today: i64,
    #[diesel(sql_type = Nullable<Integer>)]
    pub emails_per_day: Option<i32>,
    /// `healthy`, `warning` or `paused` (issue 25), and why.
    #[diesel(sql_type = Text)]
    pub reputation: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub reputation_reason: Option<String>,
}

/// Live tenants (or the one given) that are paused or warned for their
/// reputation, suspended, bounce or draw complaints past the thresholds
/// over `from..=today`, or reached [`QUOTA_PCT`] of their daily cap today;
/// paused first, then warning, then suspended, then by bounces. One aggregate of `usage_daily` over the period (its `day`
/// index), at most [`ATTENTION_LIMIT`] rows.
pub fn attention(
    conn: &mut PgConnection,
    tenant: Option<Uuid>,
    from: NaiveDate,
    today: NaiveDate,
) -> QueryResult<Vec<Attention>> {
    diesel::sql_query(
        "WITH u AS (SELECT tenant_id, sum(emails_delivered)::bigint AS d, sum(emails_bounced)::bigint AS b, \
             sum(emails_complained)::bigint AS c, \
             (sum(emails_sent) FILTER (WHERE day = $2))::bigint AS s \
           FROM usage_daily WHERE day BETWEEN $1 AND $2 AND ($3::uuid IS NULL OR tenant_id = $3) \
           GROUP BY tenant_id) \
         SELECT t.id, t.name, t.status, coalesce(u.d, 0) AS delivered, coalesce(u.b, 0) AS bounced, \
           coalesce(u.c, 0) AS complained, coalesce(u.s, 0) AS sent_today, t.emails_per_day, \
           coalesce(r.status, 'healthy') AS reputation, r.reason AS reputation_reason \
         FROM tenants t LEFT JOIN u ON u.tenant_id = t.id \
           LEFT JOIN tenant_reputation r ON r.tenant_id = t.id \
         WHERE t.status <> 'deleted' AND ($3::uuid IS NULL OR t.id = $3) AND ( \
           t.status = 'suspended' OR r.status IN ('warning', 'paused') \
           OR (coalesce(u.b, 0) + coalesce(u.d, 0) >= $4 AND coalesce(u.b, 0) * 100 >= $5 * (coalesce(u.b, 0) + coalesce(u.d, 0))) \
           OR (coalesce(u.c, 0) > 0 AND coalesce(u.c, 0) * 1000 >= $6 * coalesce(u.d, 0)) \
           OR (t.emails_per_day IS NOT NULL AND coalesce(u.s, 0) * 100 >= $7 * t.emails_per_day)) \
         ORDER BY r.status = 'paused' DESC NULLS LAST, r.status = 'warning' DESC NULLS LAST, \
           t.status = 'suspended' DESC, coalesce(u.b, 0) DESC, t.name, t.id LIMIT $8",
    )
    .bind::<Date, _>(from)
    .bind::<Date, _>(today)
    .bind::<Nullable<SqlUuid>, _>(tenant)
    .bind::<BigInt, _>(MIN_OUTCOMES)
    .bind::<BigInt, _>(BOUNCE_RATE_PCT)
    .bind::<BigInt, _>(COMPLAINTS_PER_MILLE)
    .bind::<BigInt, _>(QUOTA_PCT)
    .bind::<BigInt, _>(ATTENTION_LIMIT)
    .load(conn)
}

#[derive(QueryableByName)]
struct Named {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    name: String,
}

/// Names of the given tenants (deleted ones too: old mail keeps its name).
pub fn names(conn: &mut PgConnection, ids: &[Uuid]) -> QueryResult<Vec<(Uuid, String)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Named> = diesel::sql_query("SELECT id, name FROM tenants WHERE id = ANY($1)")
        .bind::<diesel::sql_types::Array<SqlUuid>, _>(ids)
        .load(conn)?;
    Ok(rows.into_iter().map(|r| (r.id, r.name)).collect())
}
