//! API key rows and their queries. Tenant keys (`api_keys`, keyed
//! `(tenant_id, id)`) are always looked up with their tenant id, so a foreign
//! key id is simply "not found"; admin keys live in `admin_keys` (a
//! reference table). Authentication knows only the token's key id: the
//! `api_key_directory` (a reference table) says whose it is first.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::{admin_keys, api_key_directory as directory, api_keys, tenants};
use crate::domain::{ApiKeyId, TenantId};

/// A key; `tenant_id` is `None` for an admin key.
#[derive(Clone, Debug, Queryable)]
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

/// The columns of an [`ApiKeyRow`], from either table.
macro_rules! columns {
    (tenant) => {
        (
            api_keys::id,
            api_keys::tenant_id.nullable(),
            api_keys::kind,
            api_keys::name,
            api_keys::key_id,
            api_keys::secret_hash,
            api_keys::permissions,
            api_keys::expires_at,
            api_keys::revoked_at,
            api_keys::last_used_at,
            api_keys::created_at,
        )
    };
    (admin) => {
        (
            admin_keys::id,
            diesel::dsl::sql::<Nullable<SqlUuid>>("NULL"),
            admin_keys::kind,
            admin_keys::name,
            admin_keys::key_id,
            admin_keys::secret_hash,
            admin_keys::permissions,
            admin_keys::expires_at,
            admin_keys::revoked_at,
            admin_keys::last_used_at,
            admin_keys::created_at,
        )
    };
}

#[derive(Debug)]
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
    /// Writes the key and its directory entry (the key id's uniqueness
    /// across tenants and admins is the directory's primary key).
    pub fn insert(&self, conn: &mut PgConnection) -> QueryResult<ApiKeyRow> {
        diesel::insert_into(directory::table)
            .values((
                directory::key_id.eq(self.key_id),
                directory::tenant_id.eq(self.tenant_id),
            ))
            .execute(conn)?;
        match self.tenant_id {
            Some(t) => diesel::insert_into(api_keys::table)
                .values((
                    api_keys::id.eq(self.id),
                    api_keys::tenant_id.eq(t),
                    api_keys::kind.eq(self.kind),
                    api_keys::name.eq(self.name),
                    api_keys::key_id.eq(self.key_id),
                    api_keys::secret_hash.eq(self.secret_hash),
                    api_keys::permissions.eq(&self.permissions),
                    api_keys::expires_at.eq(self.expires_at),
                ))
                .returning(columns!(tenant))
                .get_result(conn),
            None => diesel::insert_into(admin_keys::table)
                .values((
                    admin_keys::id.eq(self.id),
                    admin_keys::kind.eq(self.kind),
                    admin_keys::name.eq(self.name),
                    admin_keys::key_id.eq(self.key_id),
                    admin_keys::secret_hash.eq(self.secret_hash),
                    admin_keys::permissions.eq(&self.permissions),
                    admin_keys::expires_at.eq(self.expires_at),
                ))
                .returning(columns!(admin))
                .get_result(conn),
        }
    }
}

/// What authentication needs: the key and, for tenant keys, its tenant's
/// status. The directory names the owner; the key row is then read where
/// it lives (one tenant's rows, or the admin keys).
pub fn find_for_auth(
    conn: &mut PgConnection,
    key_id: &str,
) -> QueryResult<Option<(ApiKeyRow, Option<String>)>> {
    let owner: Option<Option<Uuid>> = directory::table
        .filter(directory::key_id.eq(key_id))
        .select(directory::tenant_id)
        .first(conn)
        .optional()?;
    match owner {
        None => Ok(None),
        Some(Some(t)) => api_keys::table
            .inner_join(tenants::table)
            .filter(api_keys::tenant_id.eq(t))
            .filter(api_keys::key_id.eq(key_id))
            .select((columns!(tenant), tenants::status.nullable()))
            .first(conn)
            .optional(),
        Some(None) => admin_keys::table
            .filter(admin_keys::key_id.eq(key_id))
            .select((columns!(admin), diesel::dsl::sql::<Nullable<Text>>("NULL")))
            .first(conn)
            .optional(),
    }
}

/// A page of keys of one tenant (`Some`) or of the admin keys (`None`).
pub fn list(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    page: PageRequest,
) -> QueryResult<Vec<ApiKeyRow>> {
    match tenant {
        Some(t) => {
            let q = api_keys::table
                .filter(api_keys::tenant_id.eq(t.0))
                .select(columns!(tenant))
                .into_boxed();
            crate::keyset_page!(q, api_keys, page).load(conn)
        }
        None => {
            let q = admin_keys::table.select(columns!(admin)).into_boxed();
            crate::keyset_page!(q, admin_keys, page).load(conn)
        }
    }
}

/// Revokes one key of the given owner; `false` when no such key exists there.
/// Revoking a revoked key succeeds and keeps the first revocation time.
pub fn revoke(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    id: ApiKeyId,
) -> QueryResult<bool> {
    let exists: Option<Uuid> = match tenant {
        Some(t) => api_keys::table
            .filter(api_keys::tenant_id.eq(t.0))
            .filter(api_keys::id.eq(id.0))
            .select(api_keys::id)
            .first(conn)
            .optional()?,
        None => admin_keys::table
            .filter(admin_keys::id.eq(id.0))
            .select(admin_keys::id)
            .first(conn)
            .optional()?,
    };
    if exists.is_none() {
        return Ok(false);
    }
    match tenant {
        Some(t) => diesel::update(
            api_keys::table
                .filter(api_keys::tenant_id.eq(t.0))
                .filter(api_keys::id.eq(id.0))
                .filter(api_keys::revoked_at.is_null()),
        )
        .set(api_keys::revoked_at.eq(diesel::dsl::now))
        .execute(conn)?,
        None => diesel::update(
            admin_keys::table
                .filter(admin_keys::id.eq(id.0))
                .filter(admin_keys::revoked_at.is_null()),
        )
        .set(admin_keys::revoked_at.eq(diesel::dsl::now))
        .execute(conn)?,
    };
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

/// Writes many `last_used_at` values in one statement per table; never
/// moves a value back. The batch names keys by id alone (the node's
/// collected uses, of any tenant and of admins).
pub fn record_last_used(
    conn: &mut PgConnection,
    ids: Vec<Uuid>,
    times: Vec<DateTime<Utc>>,
) -> QueryResult<usize> {
    let mut n = 0;
    for table in ["api_keys", "admin_keys"] {
        n += diesel::sql_query(format!(
            "UPDATE {table} SET last_used_at = GREATEST(COALESCE({table}.last_used_at, u.t), u.t) \
             FROM unnest($1, $2) AS u(id, t) WHERE {table}.id = u.id"
        ))
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Timestamptz>, _>(&times)
        .execute(conn)?;
    }
    Ok(n)
}
