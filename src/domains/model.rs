//! `domains` and `domain_dkim_keys` rows and their queries. Every query on a
//! tenant's domains takes the tenant; the only cross-tenant reads are
//! [`holders`] (ownership: who holds a name) and the recheck claim, which
//! are about names, not one tenant's data.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::{domain_dkim_keys as keys, domains};
use crate::domain::TenantId;

#[derive(Clone, Debug, Queryable, Selectable, Insertable, QueryableByName)]
#[diesel(table_name = domains)]
pub struct DomainRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub verified_at: Option<DateTime<Utc>>,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub next_check_at: DateTime<Utc>,
    pub checks: serde_json::Value,
}

impl DomainRow {
    pub fn position(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = keys)]
pub struct DkimKeyRow {
    pub tenant_id: Uuid,
    pub domain_id: Uuid,
    pub id: Uuid,
    pub selector: String,
    pub algorithm: String,
    pub status: String,
    /// Sealed with the Vault ([`super::keys::private_key_context`]).
    pub private_key_enc: Vec<u8>,
    pub public_key: String,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    pub retire_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for DkimKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKeyRow")
            .field("id", &self.id)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("status", &self.status)
            .field("private_key_enc", &"[redacted]")
            .finish()
    }
}

/// How a path names a domain: its uuid or its name.
#[derive(Clone, Debug)]
pub enum DomainRef {
    Id(Uuid),
    Name(String),
}

impl DomainRef {
    pub fn parse(raw: &str) -> DomainRef {
        match Uuid::parse_str(raw) {
            Ok(id) => DomainRef::Id(id),
            Err(_) => DomainRef::Name(raw.trim().trim_end_matches('.').to_ascii_lowercase()),
        }
    }
}

pub fn insert(
    conn: &mut PgConnection,
    row: &DomainRow,
    new_keys: &[DkimKeyRow],
) -> QueryResult<()> {
    diesel::insert_into(domains::table)
        .values(row)
        .execute(conn)?;
    insert_keys(conn, new_keys)
}

pub fn insert_keys(conn: &mut PgConnection, new_keys: &[DkimKeyRow]) -> QueryResult<()> {
    diesel::insert_into(keys::table)
        .values(new_keys)
        .execute(conn)
        .map(|_| ())
}

/// The tenant's legacy `domain` as a pending domain resource (no-op when the
/// tenant has it already). Its DKIM key is made on first read or check.
pub fn adopt_legacy(conn: &mut PgConnection, tenant: TenantId, name: &str) -> QueryResult<()> {
    let now = Utc::now();
    diesel::insert_into(domains::table)
        .values(&DomainRow {
            tenant_id: tenant.0,
            id: Uuid::new_v4(),
            name: name.to_string(),
            status: "pending".into(),
            created_at: now,
            verified_at: None,
            last_checked_at: None,
            failing_since: None,
            next_check_at: now,
            checks: serde_json::json!({}),
        })
        .on_conflict((domains::tenant_id, domains::name))
        .do_nothing()
        .execute(conn)
        .map(|_| ())
}

pub fn find(
    conn: &mut PgConnection,
    tenant: TenantId,
    r: &DomainRef,
    lock: bool,
) -> QueryResult<Option<DomainRow>> {
    if matches!(r, DomainRef::Name(n) if n.contains('\0')) {
        return Ok(None);
    }
    let base = domains::table
        .filter(domains::tenant_id.eq(tenant.0))
        .select(DomainRow::as_select());
    match (r, lock) {
        (DomainRef::Id(id), false) => base.filter(domains::id.eq(*id)).first(conn),
        (DomainRef::Id(id), true) => base.filter(domains::id.eq(*id)).for_update().first(conn),
        (DomainRef::Name(n), false) => base.filter(domains::name.eq(n)).first(conn),
        (DomainRef::Name(n), true) => base.filter(domains::name.eq(n)).for_update().first(conn),
    }
    .optional()
}

pub fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    page: PageRequest,
) -> QueryResult<Vec<DomainRow>> {
    let mut q = domains::table
        .filter(domains::tenant_id.eq(tenant.0))
        .select(DomainRow::as_select())
        .order((domains::created_at.desc(), domains::id.desc()))
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(c) = page.after {
        q = q.filter(
            domains::created_at.lt(c.created_at).or(domains::created_at
                .eq(c.created_at)
                .and(domains::id.lt(c.id))),
        );
    }
    q.load(conn)
}

/// The DKIM keys of some of the tenant's domains, oldest first.
pub fn keys_of(
    conn: &mut PgConnection,
    tenant: TenantId,
    domain_ids: &[Uuid],
) -> QueryResult<Vec<DkimKeyRow>> {
    keys::table
        .filter(keys::tenant_id.eq(tenant.0))
        .filter(keys::domain_id.eq_any(domain_ids))
        .select(DkimKeyRow::as_select())
        .order((keys::created_at.asc(), keys::id.asc()))
        .load(conn)
}

pub fn delete(conn: &mut PgConnection, tenant: TenantId, id: Uuid) -> QueryResult<usize> {
    release_name(conn, tenant.0, id)?;
    diesel::delete(
        domains::table
            .filter(domains::tenant_id.eq(tenant.0))
            .filter(domains::id.eq(id)),
    )
    .execute(conn)
}

/// Drops the domain's entry in `verified_domains` (if it has one).
fn release_name(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> QueryResult<usize> {
    use diesel::sql_types::Uuid as SqlUuid;
    diesel::sql_query("DELETE FROM verified_domains WHERE tenant_id = $1 AND domain_id = $2")
        .bind::<SqlUuid, _>(tenant)
        .bind::<SqlUuid, _>(id)
        .execute(conn)
}

/// Keeps `verified_domains` (the platform-wide directory of verified names,
/// a reference table) in step with a domain's status: its primary key on
/// the name is what holds a name to one verified owner, so two tenants
/// verifying the same name at once end with a unique violation for the
/// second, as the partial unique index on `domains` did before the shard
/// split.
fn hold_name(conn: &mut PgConnection, row: &DomainRow) -> QueryResult<()> {
    use diesel::sql_types::{Text, Uuid as SqlUuid};
    release_name(conn, row.tenant_id, row.id)?;
    if row.status == "verified" {
        diesel::sql_query(
            "INSERT INTO verified_domains (name, tenant_id, domain_id) VALUES ($1, $2, $3)",
        )
        .bind::<Text, _>(&row.name)
        .bind::<SqlUuid, _>(row.tenant_id)
        .bind::<SqlUuid, _>(row.id)
        .execute(conn)?;
    }
    Ok(())
}

/// Who holds any of `names` (with which status), across tenants: the
/// ownership rule compares a name with every other tenant's names.
pub fn holders(
    conn: &mut PgConnection,
    names: &[String],
) -> QueryResult<Vec<(Uuid, String, String)>> {
    domains::table
        .inner_join(crate::db::schema::tenants::table)
        .filter(domains::name.eq_any(names))
        .filter(crate::db::schema::tenants::status.ne("deleted"))
        .select((domains::tenant_id, domains::name, domains::status))
        .load(conn)
}

/// Writes the outcome of a check (status and timestamps) back, and the
/// name's entry in `verified_domains` (a unique violation when another
/// tenant holds the name verified).
pub fn save_check(conn: &mut PgConnection, row: &DomainRow) -> QueryResult<usize> {
    hold_name(conn, row)?;
    diesel::update(
        domains::table
            .filter(domains::tenant_id.eq(row.tenant_id))
            .filter(domains::id.eq(row.id)),
    )
    .set((
        domains::status.eq(&row.status),
        domains::verified_at.eq(row.verified_at),
        domains::last_checked_at.eq(row.last_checked_at),
        domains::failing_since.eq(row.failing_since),
        domains::next_check_at.eq(row.next_check_at),
        domains::checks.eq(&row.checks),
    ))
    .execute(conn)
}

/// Sets a key's status and timestamps.
pub fn save_key(conn: &mut PgConnection, k: &DkimKeyRow) -> QueryResult<usize> {
    diesel::update(
        keys::table
            .filter(keys::tenant_id.eq(k.tenant_id))
            .filter(keys::domain_id.eq(k.domain_id))
            .filter(keys::id.eq(k.id)),
    )
    .set((
        keys::status.eq(&k.status),
        keys::activated_at.eq(k.activated_at),
        keys::retire_at.eq(k.retire_at),
    ))
    .execute(conn)
}

pub fn delete_key(conn: &mut PgConnection, k: &DkimKeyRow) -> QueryResult<usize> {
    diesel::delete(
        keys::table
            .filter(keys::tenant_id.eq(k.tenant_id))
            .filter(keys::domain_id.eq(k.domain_id))
            .filter(keys::id.eq(k.id)),
    )
    .execute(conn)
}

/// Leases up to `limit` domains due for a recheck: their next check moves to
/// `next`, so concurrent nodes (SKIP LOCKED) never check the same domain.
pub fn claim_due(
    conn: &mut PgConnection,
    limit: i64,
    next: DateTime<Utc>,
) -> QueryResult<Vec<DomainRow>> {
    use diesel::sql_types::{BigInt, Timestamptz};
    diesel::sql_query(
        "UPDATE domains d SET next_check_at = $2 \
         FROM (SELECT tenant_id, id FROM domains WHERE next_check_at <= now() \
               ORDER BY next_check_at LIMIT $1 FOR UPDATE SKIP LOCKED) due \
         WHERE d.tenant_id = due.tenant_id AND d.id = due.id \
         RETURNING d.*",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Timestamptz, _>(next)
    .load(conn)
}

/// The active DKIM keys of the tenant's domains among `names` (the From
/// domain and its parents), with the domain name each belongs to.
pub fn active_keys_for(
    conn: &mut PgConnection,
    tenant: TenantId,
    names: &[String],
) -> QueryResult<Vec<(String, DkimKeyRow)>> {
    keys::table
        .inner_join(
            domains::table.on(domains::tenant_id
                .eq(keys::tenant_id)
                .and(domains::id.eq(keys::domain_id))),
        )
        .filter(keys::tenant_id.eq(tenant.0))
        .filter(domains::name.eq_any(names))
        .filter(keys::status.eq("active"))
        .select((domains::name, DkimKeyRow::as_select()))
        .order(keys::created_at.desc())
        .load(conn)
}

/// True when the tenant has any domain (in any status).
pub fn has_any(conn: &mut PgConnection, tenant: TenantId) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        domains::table.filter(domains::tenant_id.eq(tenant.0)),
    ))
    .get_result(conn)
}

/// How many domains the tenant has (the per-tenant bound).
pub fn count(conn: &mut PgConnection, tenant: TenantId) -> QueryResult<i64> {
    domains::table
        .filter(domains::tenant_id.eq(tenant.0))
        .count()
        .get_result(conn)
}

/// The return-path record name (`pl-bounces.<domain>`) of the most specific
/// of the tenant's domains among `names` whose record checked `ok` (issue
/// 13: that domain's mail goes out with a return path at that name).
pub fn return_path_for(
    conn: &mut PgConnection,
    tenant: TenantId,
    names: &[String],
) -> QueryResult<Option<String>> {
    let rows: Vec<(String, serde_json::Value)> = domains::table
        .filter(domains::tenant_id.eq(tenant.0))
        .filter(domains::name.eq_any(names))
        .select((domains::name, domains::checks))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter(|(name, checks)| return_path_ok(name, checks))
        .max_by_key(|(name, _)| name.len())
        .map(|(name, _)| super::checks::return_path_name(&name)))
}

/// True when `record` (`pl-bounces.<domain>`) is the return-path record of
/// some live tenant's domain and checked `ok`: the inbound listener accepts
/// mail for it (which message a report is about, the VERP token decides).
/// Cross-tenant by design: a name, not one tenant's data.
pub fn serves_return_path(conn: &mut PgConnection, record: &str) -> QueryResult<bool> {
    use crate::db::schema::tenants;
    let Some(name) = record.strip_prefix(&format!("{}.", super::checks::RETURN_PATH_LABEL)) else {
        return Ok(false);
    };
    let rows: Vec<serde_json::Value> = domains::table
        .inner_join(tenants::table)
        .filter(domains::name.eq(name))
        .filter(tenants::status.ne("deleted"))
        .select(domains::checks)
        .load(conn)?;
    Ok(rows.iter().any(|checks| return_path_ok(name, checks)))
}

fn return_path_ok(domain: &str, checks: &serde_json::Value) -> bool {
    checks
        .get(super::checks::return_path_check_key(domain))
        .and_then(serde_json::Value::as_str)
        == Some("ok")
}
