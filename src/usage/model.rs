//! `usage_daily`: per tenant, per UTC day counters, and the exact daily quota.
//! Rows are locked and updated in tenant-id order so concurrent transactions
//! (also on other nodes) never deadlock on them.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Date, Uuid as SqlUuid};
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
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.emails_sent += o.emails_sent;
        self.emails_delivered += o.emails_delivered;
        self.emails_bounced += o.emails_bounced;
        self.emails_failed += o.emails_failed;
        self.api_requests += o.api_requests;
    }
}

#[derive(QueryableByName)]
struct SentRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = BigInt)]
    emails_sent: i64,
}

/// Locks the day's rows of the given tenants (creating them) and returns
/// what each has sent so far. Call inside the enqueue transaction.
pub fn lock_sent(
    conn: &mut PgConnection,
    day: NaiveDate,
    tenants: &[Uuid],
) -> QueryResult<BTreeMap<Uuid, i64>> {
    let mut sorted = tenants.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.is_empty() {
        return Ok(BTreeMap::new());
    }
    diesel::sql_query(
        "INSERT INTO usage_daily (tenant_id, day) SELECT t, $2 FROM unnest($1) AS t ORDER BY t \
         ON CONFLICT (tenant_id, day) DO NOTHING",
    )
    .bind::<Array<SqlUuid>, _>(&sorted)
    .bind::<Date, _>(day)
    .execute(conn)?;
    let rows: Vec<SentRow> = diesel::sql_query(
        "SELECT tenant_id, emails_sent FROM usage_daily WHERE tenant_id = ANY($1) AND day = $2 \
         ORDER BY tenant_id FOR UPDATE",
    )
    .bind::<Array<SqlUuid>, _>(&sorted)
    .bind::<Date, _>(day)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.tenant_id, r.emails_sent))
        .collect())
}

/// Adds to the day's counters of many tenants in one statement.
pub fn add(
    conn: &mut PgConnection,
    day: NaiveDate,
    deltas: &BTreeMap<Uuid, Counters>,
) -> QueryResult<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&Counters) -> i64| deltas.values().map(f).collect::<Vec<i64>>();
    let ids: Vec<Uuid> = deltas.keys().copied().collect();
    diesel::sql_query(
        "INSERT INTO usage_daily AS u (tenant_id, day, emails_sent, emails_delivered, emails_bounced, emails_failed, api_requests) \
         SELECT t, $2, s, d, b, f, a FROM unnest($1, $3, $4, $5, $6, $7) AS x(t, s, d, b, f, a) ORDER BY t \
         ON CONFLICT (tenant_id, day) DO UPDATE SET \
           emails_sent = u.emails_sent + EXCLUDED.emails_sent, \
           emails_delivered = u.emails_delivered + EXCLUDED.emails_delivered, \
           emails_bounced = u.emails_bounced + EXCLUDED.emails_bounced, \
           emails_failed = u.emails_failed + EXCLUDED.emails_failed, \
           api_requests = u.api_requests + EXCLUDED.api_requests",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Date, _>(day)
    .bind::<Array<BigInt>, _>(col(|c| c.emails_sent))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_delivered))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_bounced))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_failed))
    .bind::<Array<BigInt>, _>(col(|c| c.api_requests))
    .execute(conn)
    .map(|_| ())
}

#[derive(Debug, Queryable)]
pub struct DayRow {
    pub tenant_id: Uuid,
    pub day: NaiveDate,
    pub counters: Counters,
}

/// Daily rows of the given tenants between two dates (inclusive).
pub fn days(
    conn: &mut PgConnection,
    tenants: &[Uuid],
    from: NaiveDate,
    to: NaiveDate,
) -> QueryResult<Vec<DayRow>> {
    usage_daily::table
        .filter(usage_daily::tenant_id.eq_any(tenants))
        .filter(usage_daily::day.between(from, to))
        .order((usage_daily::tenant_id, usage_daily::day))
        .select((
            usage_daily::tenant_id,
            usage_daily::day,
            Counters::as_select(),
        ))
        .load(conn)
}
