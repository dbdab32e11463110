//! `tenants` rows and their queries. Deleted tenants are invisible here except
//! through [`find_any`], which usage reporting needs.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::tenants;
use crate::domain::TenantId;

#[derive(Clone, Debug, Queryable, Selectable, Identifiable, AsChangeset)]
#[diesel(table_name = tenants, treat_none_as_null = true)]
pub struct TenantRow {
    pub id: Uuid,
    pub external_id: Option<String>,
    pub name: String,
    pub domain: Option<String>,
    pub settings: serde_json::Value,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<i32>,
    pub smtp_username: Option<String>,
    pub smtp_password_enc: Option<Vec<u8>>,
    pub smtp_tls: Option<String>,
    pub requests_per_minute: Option<i32>,
    pub emails_per_day: Option<i32>,
    pub emails_per_second: Option<i32>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// Days bodies/headers/attachments are kept; `None` = `retention.content_days`.
    pub retention_content_days: Option<i32>,
    /// The reputation policy override (issue 25); `None` = `[reputation]`.
    pub reputation_policy: Option<serde_json::Value>,
    /// Egress pool per stream (issue 26): `{"transactional", "broadcast"}`;
    /// absent = `default` ([`crate::delivery::pools::TenantPools`]).
    pub pools: serde_json::Value,
}

impl TenantRow {
    pub fn tenant_id(&self) -> TenantId {
        TenantId(self.id)
    }

    pub fn position(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }

    pub fn insert(&self, conn: &mut PgConnection) -> QueryResult<TenantRow> {
        diesel::insert_into(tenants::table)
            .values((
                tenants::id.eq(self.id),
                tenants::external_id.eq(&self.external_id),
                tenants::name.eq(&self.name),
                tenants::domain.eq(&self.domain),
                tenants::settings.eq(&self.settings),
                tenants::smtp_host.eq(&self.smtp_host),
                tenants::smtp_port.eq(self.smtp_port),
                tenants::smtp_username.eq(&self.smtp_username),
                tenants::smtp_password_enc.eq(&self.smtp_password_enc),
                tenants::smtp_tls.eq(&self.smtp_tls),
                tenants::requests_per_minute.eq(self.requests_per_minute),
                tenants::emails_per_day.eq(self.emails_per_day),
                tenants::emails_per_second.eq(self.emails_per_second),
                tenants::status.eq(&self.status),
                tenants::retention_content_days.eq(self.retention_content_days),
                tenants::reputation_policy.eq(&self.reputation_policy),
                tenants::pools.eq(&self.pools),
            ))
            .returning(TenantRow::as_returning())
            .get_result(conn)
    }

    /// Writes every column of this row back (the service computed it from a
    /// locked read), stamping `updated_at`.
    pub fn save(&mut self, conn: &mut PgConnection) -> QueryResult<TenantRow> {
        self.updated_at = Utc::now();
        diesel::update(tenants::table.find(self.id))
            .set(&*self)
            .returning(TenantRow::as_returning())
            .get_result(conn)
    }
}

/// How a path names a tenant: its uuid or its `external_id`.
#[derive(Clone, Debug)]
pub enum TenantRef {
    Id(Uuid),
    External(String),
}

impl TenantRef {
    pub fn parse(raw: &str) -> TenantRef {
        match Uuid::parse_str(raw) {
            Ok(id) => TenantRef::Id(id),
            Err(_) => TenantRef::External(raw.to_string()),
        }
    }
}

/// A live (not deleted) tenant; `lock` takes a row lock for an update.
pub fn find(conn: &mut PgConnection, r: &TenantRef, lock: bool) -> QueryResult<Option<TenantRow>> {
    // Postgres text cannot hold NUL, so no tenant has such a name; asking
    // would fail the query (a 500, found by the input drill).
    if matches!(r, TenantRef::External(ext) if ext.contains('\0')) {
        return Ok(None);
    }
    let base = tenants::table
        .select(TenantRow::as_select())
        .filter(tenants::status.ne("deleted"));
    // Locking clauses cannot be boxed, hence the four spelled-out queries.
    match (r, lock) {
        (TenantRef::Id(id), false) => base.filter(tenants::id.eq(*id)).first(conn),
        (TenantRef::Id(id), true) => base.filter(tenants::id.eq(*id)).for_update().first(conn),
        (TenantRef::External(ext), false) => base.filter(tenants::external_id.eq(ext)).first(conn),
        (TenantRef::External(ext), true) => base
            .filter(tenants::external_id.eq(ext))
            .for_update()
            .first(conn),
    }
    .optional()
}

/// A tenant in any state, deleted included (usage stays readable).
pub fn find_any(conn: &mut PgConnection, id: TenantId) -> QueryResult<Option<TenantRow>> {
    tenants::table
        .find(id.0)
        .select(TenantRow::as_select())
        .first(conn)
        .optional()
}

pub fn list(conn: &mut PgConnection, page: PageRequest) -> QueryResult<Vec<TenantRow>> {
    let mut q = tenants::table
        .select(TenantRow::as_select())
        .filter(tenants::status.ne("deleted"))
        .order((tenants::created_at.desc(), tenants::id.desc()))
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(c) = page.after {
        q = q.filter(
            tenants::created_at.lt(c.created_at).or(tenants::created_at
                .eq(c.created_at)
                .and(tenants::id.lt(c.id))),
        );
    }
    q.load(conn)
}

/// Several tenants by id in one query (the worker's relay lookup).
pub fn find_many(conn: &mut PgConnection, ids: &[Uuid]) -> QueryResult<Vec<TenantRow>> {
    tenants::table
        .filter(tenants::id.eq_any(ids))
        .select(TenantRow::as_select())
        .load(conn)
}

/// Tenants for a usage report: live ones, and deleted ones that had usage
/// between `from` and `to`.
pub fn list_for_usage(
    conn: &mut PgConnection,
    page: PageRequest,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> QueryResult<Vec<TenantRow>> {
    use crate::db::schema::usage_daily;
    let had_usage = diesel::dsl::exists(
        usage_daily::table
            .filter(usage_daily::tenant_id.eq(tenants::id))
            .filter(usage_daily::day.between(from, to)),
    );
    let mut q = tenants::table
        .select(TenantRow::as_select())
        .filter(tenants::status.ne("deleted").or(had_usage))
        .order((tenants::created_at.desc(), tenants::id.desc()))
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(c) = page.after {
        q = q.filter(
            tenants::created_at.lt(c.created_at).or(tenants::created_at
                .eq(c.created_at)
                .and(tenants::id.lt(c.id))),
        );
    }
    q.load(conn)
}
