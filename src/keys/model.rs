//! `api_keys` rows and their queries. Tenant keys are always looked up with
//! their tenant id, so a foreign key id is simply "not found".

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::{api_keys, tenants};
use crate::domain::{ApiKeyId, TenantId};

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub kind: String,
    pub name: String,
    pub key_id: String,
    pub secret_hash: String,
    pub permissions: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl ApiKeyRow {
    pub fn position(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = api_keys)]
pub struct NewApiKey<'a> {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub kind: &'a str,
    pub name: &'a str,
    pub key_id: &'a str,
    pub secret_hash: &'a str,
    pub permissions: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewApiKey<'_> {
    pub fn insert(&self, conn: &mut PgConnection) -> QueryResult<ApiKeyRow> {
        diesel::insert_into(api_keys::table)
            .values(self)
            .returning(ApiKeyRow::as_returning())
            .get_result(conn)
    }
}

/// What authentication needs: the key and, for tenant keys, its tenant's status.
pub fn find_for_auth(
    conn: &mut PgConnection,
    key_id: &str,
) -> QueryResult<Option<(ApiKeyRow, Option<String>)>> {
    api_keys::table
        .left_join(tenants::table)
        .filter(api_keys::key_id.eq(key_id))
        .select((ApiKeyRow::as_select(), tenants::status.nullable()))
        .first(conn)
        .optional()
}

/// A page of keys of one tenant (`Some`) or of the admin keys (`None`).
pub fn list(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    page: PageRequest,
) -> QueryResult<Vec<ApiKeyRow>> {
    let mut q = api_keys::table
        .select(ApiKeyRow::as_select())
        .order((api_keys::created_at.desc(), api_keys::id.desc()))
        .limit(page.limit + 1)
        .into_boxed();
    q = match tenant {
        Some(t) => q.filter(api_keys::tenant_id.eq(t.0)),
        None => q.filter(api_keys::tenant_id.is_null()),
    };
    if let Some(c) = page.after {
        q = q.filter(
            api_keys::created_at
                .lt(c.created_at)
                .or(api_keys::created_at
                    .eq(c.created_at)
                    .and(api_keys::id.lt(c.id))),
        );
    }
    q.load(conn)
}

/// Revokes one key of the given owner; `false` when no such key exists there.
/// Revoking a revoked key succeeds and keeps the first revocation time.
pub fn revoke(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    id: ApiKeyId,
) -> QueryResult<bool> {
    let target = api_keys::table.filter(api_keys::id.eq(id.0)).into_boxed();
    let target = match tenant {
        Some(t) => target.filter(api_keys::tenant_id.eq(t.0)),
        None => target.filter(api_keys::tenant_id.is_null()),
    };
    let exists: Option<Uuid> = target.select(api_keys::id).first(conn).optional()?;
    if exists.is_none() {
        return Ok(false);
    }
    diesel::update(
        api_keys::table
            .filter(api_keys::id.eq(id.0))
            .filter(api_keys::revoked_at.is_null()),
    )
    .set(api_keys::revoked_at.eq(diesel::dsl::now))
    .execute(conn)?;
    Ok(true)
}

/// Revokes every key of a tenant (tenant deletion).
pub fn revoke_all_of_tenant(conn: &mut PgConnection, tenant: TenantId) -> QueryResult<usize> {
    diesel::update(
        api_keys::table
            .filter(api_keys::tenant_id.eq(tenant.0))
            .filter(api_keys::revoked_at.is_null()),
    )
    .set(api_keys::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
}

/// Writes many `last_used_at` values in one statement; never moves a value back.
pub fn record_last_used(
    conn: &mut PgConnection,
    ids: Vec<Uuid>,
    times: Vec<DateTime<Utc>>,
) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE api_keys SET last_used_at = GREATEST(COALESCE(api_keys.last_used_at, u.t), u.t) \
         FROM unnest($1, $2) AS u(id, t) WHERE api_keys.id = u.id",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Timestamptz>, _>(times)
    .execute(conn)
}
