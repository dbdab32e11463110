//! `usage_daily`: per tenant, per UTC day counters in shards.
//!
//! Counters are added to one of the shards `1..=SHARDS` in a single
//! statement in tenant order, so concurrent writers spread over rows and
//! never lock them in opposite orders. Reads sum the shards (shard 0 holds
//! what older versions counted under the quota lock). The daily quota reads
//! `emails_sent` with [`sent`]; its lock is the tenant's budget row
//! (`crate::limits::quota`), never a usage row.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Date, SmallInt, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::schema::usage_daily;

#[derive(Clone, Debug, Default, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = usage_daily)]
pub struct Counters {
    pub emails_sent: i64,
    pub emails_delivered: i64,
    pub emails_bounced: i64,
    pub emails_failed: i64,
    pub api_requests: i64,
    pub emails_complained: i64,
    pub emails_suppressed: i64,
    /// One-click and mailto unsubscribes (issue 26).
    pub emails_unsubscribed: i64,
    /// Recipients whose first human open was counted (issue 29).
    pub emails_opened: i64,
    /// Recipients whose first human click was counted (issue 29).
    pub emails_clicked: i64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.emails_sent += o.emails_sent;
        self.emails_delivered += o.emails_delivered;
        self.emails_bounced += o.emails_bounced;
        self.emails_failed += o.emails_failed;
        self.api_requests += o.api_requests;
        self.emails_complained += o.emails_complained;
        self.emails_suppressed += o.emails_suppressed;
        self.emails_unsubscribed += o.emails_unsubscribed;
        self.emails_opened += o.emails_opened;
        self.emails_clicked += o.emails_clicked;
    }
}

/// Counter shards (shard 0 is no longer written).
pub const SHARDS: i16 = 8;

/// A shard for one writer's counters: spreads concurrent writers over rows.
pub fn pick_shard() -> i16 {
    use rand::Rng;
    rand::thread_rng().gen_range(1..=SHARDS)
}

/// `count` distinct shards from a random start (the ingest writers of one
/// process), repeating only past [`SHARDS`] writers.
pub fn spread_shards(count: usize) -> Vec<i16> {
    let start = pick_shard() - 1;
    (0..count)
        .map(|i| (start + (i % SHARDS as usize) as i16) % SHARDS + 1)
        .collect()
}

#[derive(QueryableByName)]
struct SentRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = BigInt)]
    emails_sent: i64,
}

/// What the tenants have sent on `day`, over all shards. The daily quota
/// reads it after locking the tenants' budgets (`crate::limits::quota`).
pub fn sent(
    conn: &mut PgConnection,
    day: NaiveDate,
    tenants: &[Uuid],
) -> QueryResult<BTreeMap<Uuid, i64>> {
    if tenants.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<SentRow> = diesel::sql_query(
        "SELECT tenant_id, sum(emails_sent)::bigint AS emails_sent FROM usage_daily \
         WHERE tenant_id = ANY($1) AND day = $2 GROUP BY tenant_id",
    )
    .bind::<Array<SqlUuid>, _>(tenants)
    .bind::<Date, _>(day)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.tenant_id, r.emails_sent))
        .collect())
}

/// Adds to the day's counters of many tenants in one statement, in tenant
/// order, on `shard` ([`pick_shard`], or an ingest writer's own).
pub fn add(
    conn: &mut PgConnection,
    day: NaiveDate,
    shard: i16,
    deltas: &BTreeMap<Uuid, Counters>,
) -> QueryResult<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&Counters) -> i64| deltas.values().map(f).collect::<Vec<i64>>();
    let ids: Vec<Uuid> = deltas.keys().copied().collect();
    crate::db::prepared::query(
        "INSERT INTO usage_daily AS u (tenant_id, day, shard, emails_sent, emails_delivered, emails_bounced, emails_failed, api_requests, emails_complained, emails_suppressed, emails_unsubscribed, emails_opened, emails_clicked) \
         SELECT t, $2, $8, s, d, b, f, a, c, x, un, o, k FROM unnest($1, $3, $4, $5, $6, $7, $9, $10, $11, $12, $13) AS x(t, s, d, b, f, a, c, x, un, o, k) ORDER BY t \
         ON CONFLICT (tenant_id, day, shard) DO UPDATE SET \
           emails_sent = u.emails_sent + EXCLUDED.emails_sent, \
           emails_delivered = u.emails_delivered + EXCLUDED.emails_delivered, \
           emails_bounced = u.emails_bounced + EXCLUDED.emails_bounced, \
           emails_failed = u.emails_failed + EXCLUDED.emails_failed, \
           api_requests = u.api_requests + EXCLUDED.api_requests, \
           emails_complained = u.emails_complained + EXCLUDED.emails_complained, \
           emails_suppressed = u.emails_suppressed + EXCLUDED.emails_suppressed, \
           emails_unsubscribed = u.emails_unsubscribed + EXCLUDED.emails_unsubscribed, \
           emails_opened = u.emails_opened + EXCLUDED.emails_opened, \
           emails_clicked = u.emails_clicked + EXCLUDED.emails_clicked",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Date, _>(day)
    .bind::<Array<BigInt>, _>(col(|c| c.emails_sent))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_delivered))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_bounced))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_failed))
    .bind::<Array<BigInt>, _>(col(|c| c.api_requests))
    .bind::<SmallInt, _>(shard)
    .bind::<Array<BigInt>, _>(col(|c| c.emails_complained))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_suppressed))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_unsubscribed))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_opened))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_clicked))
    .execute(conn)
    .map(|_| ())
}

#[derive(Debug)]
pub struct DayRow {
    pub tenant_id: Uuid,
    pub day: NaiveDate,
    pub counters: Counters,
}

#[derive(QueryableByName)]
struct SummedRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = BigInt)]
    emails_sent: i64,
    #[diesel(sql_type = BigInt)]
    emails_delivered: i64,
    #[diesel(sql_type = BigInt)]
    emails_bounced: i64,
    #[diesel(sql_type = BigInt)]
    emails_failed: i64,
    #[diesel(sql_type = BigInt)]
    api_requests: i64,
    #[diesel(sql_type = BigInt)]
    emails_complained: i64,
    #[diesel(sql_type = BigInt)]
    emails_suppressed: i64,
    #[diesel(sql_type = BigInt)]
    emails_unsubscribed: i64,
    #[diesel(sql_type = BigInt)]
    emails_opened: i64,
    #[diesel(sql_type = BigInt)]
    emails_clicked: i64,
}

/// Daily counters (shards summed) of the given tenants between two dates
/// (inclusive), by tenant and day.
pub fn days(
    conn: &mut PgConnection,
    tenants: &[Uuid],
    from: NaiveDate,
    to: NaiveDate,
) -> QueryResult<Vec<DayRow>> {
    let rows: Vec<SummedRow> = diesel::sql_query(
        "SELECT tenant_id, day, sum(emails_sent)::bigint AS emails_sent, \
           sum(emails_delivered)::bigint AS emails_delivered, sum(emails_bounced)::bigint AS emails_bounced, \
           sum(emails_failed)::bigint AS emails_failed, sum(api_requests)::bigint AS api_requests, \
           sum(emails_complained)::bigint AS emails_complained, sum(emails_suppressed)::bigint AS emails_suppressed, \
           sum(emails_unsubscribed)::bigint AS emails_unsubscribed, \
           sum(emails_opened)::bigint AS emails_opened, sum(emails_clicked)::bigint AS emails_clicked \
         FROM usage_daily WHERE tenant_id = ANY($1) AND day BETWEEN $2 AND $3 \
         GROUP BY tenant_id, day ORDER BY tenant_id, day",
    )
    .bind::<Array<SqlUuid>, _>(tenants)
    .bind::<Date, _>(from)
    .bind::<Date, _>(to)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| DayRow {
            tenant_id: r.tenant_id,
            day: r.day,
            counters: Counters {
                emails_sent: r.emails_sent,
                emails_delivered: r.emails_delivered,
                emails_bounced: r.emails_bounced,
                emails_failed: r.emails_failed,
                api_requests: r.api_requests,
                emails_complained: r.emails_complained,
                emails_suppressed: r.emails_suppressed,
                emails_unsubscribed: r.emails_unsubscribed,
                emails_opened: r.emails_opened,
                emails_clicked: r.emails_clicked,
            },
        })
        .collect())
}

#[derive(QueryableByName)]
struct DayTotal {
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = BigInt)]
    emails_sent: i64,
    #[diesel(sql_type = BigInt)]
    emails_delivered: i64,
    #[diesel(sql_type = BigInt)]
    emails_bounced: i64,
    #[diesel(sql_type = BigInt)]
    emails_failed: i64,
    #[diesel(sql_type = BigInt)]
    api_requests: i64,
    #[diesel(sql_type = BigInt)]
    emails_complained: i64,
    #[diesel(sql_type = BigInt)]
    emails_suppressed: i64,
    #[diesel(sql_type = BigInt)]
    emails_unsubscribed: i64,
    #[diesel(sql_type = BigInt)]
    emails_opened: i64,
    #[diesel(sql_type = BigInt)]
    emails_clicked: i64,
}

/// Counters per day between two dates (inclusive), summed over one tenant's
/// shards or, with `None`, over every tenant (the platform; by the `day`
/// index, so one period's rows only).
pub fn totals_by_day(
    conn: &mut PgConnection,
    tenant: Option<Uuid>,
    from: NaiveDate,
    to: NaiveDate,
) -> QueryResult<Vec<(NaiveDate, Counters)>> {
    let rows: Vec<DayTotal> = diesel::sql_query(
        "SELECT day, sum(emails_sent)::bigint AS emails_sent, \
           sum(emails_delivered)::bigint AS emails_delivered, sum(emails_bounced)::bigint AS emails_bounced, \
           sum(emails_failed)::bigint AS emails_failed, sum(api_requests)::bigint AS api_requests, \
           sum(emails_complained)::bigint AS emails_complained, sum(emails_suppressed)::bigint AS emails_suppressed, \
           sum(emails_unsubscribed)::bigint AS emails_unsubscribed, \
           sum(emails_opened)::bigint AS emails_opened, sum(emails_clicked)::bigint AS emails_clicked \
         FROM usage_daily WHERE day BETWEEN $1 AND $2 AND ($3::uuid IS NULL OR tenant_id = $3) \
         GROUP BY day ORDER BY day",
    )
    .bind::<Date, _>(from)
    .bind::<Date, _>(to)
    .bind::<diesel::sql_types::Nullable<SqlUuid>, _>(tenant)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let c = Counters {
                emails_sent: r.emails_sent,
                emails_delivered: r.emails_delivered,
                emails_bounced: r.emails_bounced,
                emails_failed: r.emails_failed,
                api_requests: r.api_requests,
                emails_complained: r.emails_complained,
                emails_suppressed: r.emails_suppressed,
                emails_unsubscribed: r.emails_unsubscribed,
                emails_opened: r.emails_opened,
                emails_clicked: r.emails_clicked,
            };
            (r.day, c)
        })
        .collect())
}
