//! The SQL of leased budgets: `budgets` (one row per budget: its lock and
//! whether it is closed) and `budget_leases` (one row per holder). Every
//! statement that locks several rows locks them in key order, `budgets`
//! rows before `budget_leases` rows (the order `budget.rs` states).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::PgConnection;
use uuid::Uuid;

use super::budget::BudgetKey;

fn columns(keys: &[&BudgetKey]) -> (Vec<Uuid>, Vec<String>) {
    keys.iter().map(|k| (k.tenant_id, k.name.clone())).unzip()
}

#[derive(QueryableByName)]
pub(super) struct BudgetRow {
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub budget: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub closed_at_limit: Option<i64>,
}

/// Creates the budgets' rows when missing and locks them (`FOR UPDATE`, in
/// key order): grants and exact decisions of one budget take turns here.
pub(super) fn lock_budgets(
    conn: &mut PgConnection,
    keys: &[(&BudgetKey, DateTime<Utc>)],
) -> QueryResult<Vec<BudgetRow>> {
    let (ids, names) = columns(&keys.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    let ends: Vec<DateTime<Utc>> = keys.iter().map(|(_, e)| *e).collect();
    diesel::sql_query(
        "INSERT INTO budgets (tenant_id, budget, expires_at) \
         SELECT t, b, e FROM unnest($1, $2, $3) AS x(t, b, e) ORDER BY t, b \
         ON CONFLICT (tenant_id, budget) DO NOTHING",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Text>, _>(&names)
    .bind::<Array<Timestamptz>, _>(&ends)
    .execute(conn)?;
    diesel::sql_query(
        "SELECT tenant_id, budget, closed_at_limit FROM budgets \
         WHERE (tenant_id, budget) IN (SELECT * FROM unnest($1, $2)) \
         ORDER BY tenant_id, budget FOR UPDATE",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Text>, _>(&names)
    .load(conn)
}

/// Marks a budget closed at `limit` (`Some`) or open again (`None`).
pub(super) fn set_closed(
    conn: &mut PgConnection,
    key: &BudgetKey,
    limit: Option<i64>,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE budgets SET closed_at_limit = $3 WHERE tenant_id = $1 AND budget = $2",
    )
    .bind::<SqlUuid, _>(key.tenant_id)
    .bind::<Text, _>(&key.name)
    .bind::<Nullable<BigInt>, _>(limit)
    .execute(conn)
    .map(|_| ())
}

#[derive(QueryableByName)]
pub(super) struct LeaseRow {
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub budget: String,
    #[diesel(sql_type = SqlUuid)]
    pub holder: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub lease: Uuid,
    #[diesel(sql_type = BigInt)]
    pub granted: i64,
    #[diesel(sql_type = BigInt)]
    pub spent: i64,
    #[diesel(sql_type = Bool)]
    pub expired: bool,
}

/// Every lease of the budgets, locked `FOR UPDATE` in key order: waits for
/// the commits that hold one `FOR KEY SHARE` ([`hold`]), so their spending is
/// visible to what the caller counts next.
pub(super) fn lock_leases(
    conn: &mut PgConnection,
    keys: &[&BudgetKey],
) -> QueryResult<Vec<LeaseRow>> {
    let (ids, names) = columns(keys);
    diesel::sql_query(
        "SELECT tenant_id, budget, holder, lease, granted, spent, \
           expires_at <= clock_timestamp() AS expired \
         FROM budget_leases WHERE (tenant_id, budget) IN (SELECT * FROM unnest($1, $2)) \
         ORDER BY tenant_id, budget, holder FOR UPDATE",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Text>, _>(&names)
    .load(conn)
}

/// Deletes leases by (key, holder); the caller holds them locked.
pub(super) fn delete_leases(
    conn: &mut PgConnection,
    leases: &[(&BudgetKey, Uuid)],
) -> QueryResult<()> {
    if leases.is_empty() {
        return Ok(());
    }
    let (ids, names) = columns(&leases.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    let holders: Vec<Uuid> = leases.iter().map(|(_, h)| *h).collect();
    diesel::sql_query(
        "DELETE FROM budget_leases WHERE (tenant_id, budget, holder) IN \
         (SELECT * FROM unnest($1, $2, $3))",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Text>, _>(&names)
    .bind::<Array<SqlUuid>, _>(&holders)
    .execute(conn)
    .map(|_| ())
}

/// Creates the holder's lease (after any old one was deleted) or extends it
/// by `add`, reporting `spent`; either way it lives `lease_secs` from now.
#[allow(clippy::too_many_arguments)]
pub(super) fn put_lease(
    conn: &mut PgConnection,
    key: &BudgetKey,
    holder: Uuid,
    lease: Uuid,
    extend: bool,
    add: i64,
    spent: i64,
    lease_secs: u64,
) -> QueryResult<()> {
    let sql = if extend {
        "UPDATE budget_leases SET granted = granted + $5, spent = $6, \
           expires_at = clock_timestamp() + make_interval(secs => $7) \
         WHERE tenant_id = $1 AND budget = $2 AND holder = $3 AND lease = $4"
    } else {
        "INSERT INTO budget_leases (tenant_id, budget, holder, lease, granted, spent, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp() + make_interval(secs => $7))"
    };
    diesel::sql_query(sql)
        .bind::<SqlUuid, _>(key.tenant_id)
        .bind::<Text, _>(&key.name)
        .bind::<SqlUuid, _>(holder)
        .bind::<SqlUuid, _>(lease)
        .bind::<BigInt, _>(add)
        .bind::<BigInt, _>(spent)
        .bind::<diesel::sql_types::Double, _>(lease_secs as f64)
        .execute(conn)
        .map(|_| ())
}

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    budget: String,
}

impl KeyRow {
    fn key(self) -> BudgetKey {
        BudgetKey {
            tenant_id: self.tenant_id,
            name: self.budget,
        }
    }
}

/// In a commit that spends from leases: locks the holder's leases
/// `FOR KEY SHARE` (in key order) and returns the keys whose lease is still
/// this one and live. The holder's concurrent commits and its renewals
/// (`FOR NO KEY UPDATE`) do not wait for each other; a grant or a close
/// (`FOR UPDATE`, `DELETE`) waits for them.
pub(super) fn hold(
    conn: &mut PgConnection,
    holder: Uuid,
    leases: &[(&BudgetKey, Uuid)],
) -> QueryResult<Vec<BudgetKey>> {
    let (ids, names) = columns(&leases.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    let ids_of: Vec<Uuid> = leases.iter().map(|(_, l)| *l).collect();
    let rows: Vec<KeyRow> = crate::db::prepared::query(
        "SELECT tenant_id, budget FROM budget_leases \
         WHERE holder = $1 AND (tenant_id, budget, lease) IN (SELECT * FROM unnest($2, $3, $4)) \
           AND expires_at > clock_timestamp() \
         ORDER BY tenant_id, budget FOR KEY SHARE",
    )
    .bind::<SqlUuid, _>(holder)
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Text>, _>(&names)
    .bind::<Array<SqlUuid>, _>(&ids_of)
    .load(conn)?;
    Ok(rows.into_iter().map(KeyRow::key).collect())
}

#[derive(QueryableByName)]
struct OutstandingRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    budget: String,
    #[diesel(sql_type = BigInt)]
    outstanding: i64,
}

/// What the budgets' leases may still spend (`granted - spent` of every
/// row, live or lapsed, as last reported): read without locks by an exact
/// decision that holds the budgets' rows.
pub(super) fn outstanding(
    conn: &mut PgConnection,
    keys: &[&BudgetKey],
) -> QueryResult<Vec<(BudgetKey, i64)>> {
    let (ids, names) = columns(keys);
    let rows: Vec<OutstandingRow> = diesel::sql_query(
        "SELECT tenant_id, budget, sum(greatest(granted - spent, 0))::bigint AS outstanding \
         FROM budget_leases WHERE (tenant_id, budget) IN (SELECT * FROM unnest($1, $2)) \
         GROUP BY tenant_id, budget",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Text>, _>(&names)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                BudgetKey {
                    tenant_id: r.tenant_id,
                    name: r.budget,
                },
                r.outstanding,
            )
        })
        .collect())
}

/// Extends the holder's live leases by `lease_secs` and reports what each
/// has spent; returns the keys renewed (a lapsed or revoked lease is not).
pub(super) fn renew(
    conn: &mut PgConnection,
    holder: Uuid,
    leases: &[(&BudgetKey, Uuid, i64)],
    lease_secs: u64,
) -> QueryResult<Vec<BudgetKey>> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, names) = columns(&leases.iter().map(|(k, _, _)| *k).collect::<Vec<_>>());
    let lease_ids: Vec<Uuid> = leases.iter().map(|(_, l, _)| *l).collect();
    let spent: Vec<i64> = leases.iter().map(|(_, _, s)| *s).collect();
    // Locked in key order first, like every other multi-row lock here.
    let rows: Vec<KeyRow> = diesel::sql_query(
        "WITH mine AS ( \
           SELECT l.tenant_id, l.budget, x.s FROM budget_leases l \
           JOIN unnest($2, $3, $4, $5) AS x(t, b, id, s) \
             ON l.tenant_id = x.t AND l.budget = x.b AND l.lease = x.id \
           WHERE l.holder = $1 AND l.expires_at > clock_timestamp() \
           ORDER BY l.tenant_id, l.budget FOR NO KEY UPDATE OF l) \
         UPDATE budget_leases l SET spent = mine.s, \
           expires_at = clock_timestamp() + make_interval(secs => $6) \
         FROM mine WHERE l.holder = $1 AND l.tenant_id = mine.tenant_id AND l.budget = mine.budget \
         RETURNING l.tenant_id, l.budget",
    )
    .bind::<SqlUuid, _>(holder)
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Text>, _>(&names)
    .bind::<Array<SqlUuid>, _>(&lease_ids)
    .bind::<Array<BigInt>, _>(&spent)
    .bind::<diesel::sql_types::Double, _>(lease_secs as f64)
    .load(conn)?;
    Ok(rows.into_iter().map(KeyRow::key).collect())
}

/// Gives the holder's leases back (the rows go; what they spent is counted
/// by the budget's owner already).
pub(super) fn release(
    conn: &mut PgConnection,
    holder: Uuid,
    leases: &[(&BudgetKey, Uuid)],
) -> QueryResult<()> {
    if leases.is_empty() {
        return Ok(());
    }
    let (ids, names) = columns(&leases.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    let lease_ids: Vec<Uuid> = leases.iter().map(|(_, l)| *l).collect();
    diesel::sql_query(
        "DELETE FROM budget_leases WHERE holder = $1 AND (tenant_id, budget, lease) IN \
         (SELECT * FROM unnest($2, $3, $4))",
    )
    .bind::<SqlUuid, _>(holder)
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Text>, _>(&names)
    .bind::<Array<SqlUuid>, _>(&lease_ids)
    .execute(conn)
    .map(|_| ())
}

/// Every lease of the holder (shutdown).
pub(super) fn release_all(conn: &mut PgConnection, holder: Uuid) -> QueryResult<usize> {
    diesel::sql_query("DELETE FROM budget_leases WHERE holder = $1")
        .bind::<SqlUuid, _>(holder)
        .execute(conn)
}

/// Deletes up to `limit` budgets past their `expires_at`, with their leases;
/// rows in use are skipped.
pub(super) fn purge(conn: &mut PgConnection, limit: i64) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM budgets WHERE (tenant_id, budget) IN ( \
           SELECT tenant_id, budget FROM budgets WHERE expires_at < clock_timestamp() \
           ORDER BY tenant_id, budget LIMIT $1 FOR UPDATE SKIP LOCKED)",
    )
    .bind::<BigInt, _>(limit)
    .execute(conn)
}

/// Keeps a budget without a period (connection slots) from being purged:
/// its row lives a day past the last grant. The caller holds the row.
pub(super) fn extend_budget(conn: &mut PgConnection, key: &BudgetKey) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE budgets SET expires_at = greatest(expires_at, clock_timestamp() + interval '1 day') \
         WHERE tenant_id = $1 AND budget = $2",
    )
    .bind::<SqlUuid, _>(key.tenant_id)
    .bind::<Text, _>(&key.name)
    .execute(conn)
    .map(|_| ())
}

/// Shrinks the holder's live lease to `granted` (slots given back) and
/// renews it; false when the lease is gone or lapsed.
pub(super) fn set_granted(
    conn: &mut PgConnection,
    holder: Uuid,
    key: &BudgetKey,
    lease: Uuid,
    granted: i64,
    lease_secs: u64,
) -> QueryResult<bool> {
    diesel::sql_query(
        "UPDATE budget_leases SET granted = $5, \
           expires_at = clock_timestamp() + make_interval(secs => $6) \
         WHERE holder = $1 AND tenant_id = $2 AND budget = $3 AND lease = $4 \
           AND expires_at > clock_timestamp()",
    )
    .bind::<SqlUuid, _>(holder)
    .bind::<SqlUuid, _>(key.tenant_id)
    .bind::<Text, _>(&key.name)
    .bind::<SqlUuid, _>(lease)
    .bind::<BigInt, _>(granted)
    .bind::<diesel::sql_types::Double, _>(lease_secs as f64)
    .execute(conn)
    .map(|n| n == 1)
}
