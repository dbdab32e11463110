//! OAuth client and signing-key rows and their queries. Tenant clients
//! (`oauth_clients`, keyed `(tenant_id, id)`) are always addressed with
//! their tenant id, so another tenant's client is simply "not found";
//! platform clients live in `platform_oauth_clients` (a reference table).
//! The token endpoint knows only the `client_id`: `oauth_client_directory`
//! (a reference table) says whose it is first.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::{
    oauth_client_directory as directory, oauth_clients, oauth_signing_keys,
    platform_oauth_clients as platform, tenants,
};
use crate::domain::TenantId;

/// A client; `tenant_id` is `None` for a platform client.
#[derive(Clone, Debug, Queryable)]
pub struct ClientRow {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub kind: String,
    pub name: String,
    pub client_id: String,
    pub secret_hash: String,
    pub permissions: Vec<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl ClientRow {
    pub fn position(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// The columns of a [`ClientRow`], from either table.
macro_rules! columns {
    (tenant) => {
        (
            oauth_clients::id,
            oauth_clients::tenant_id.nullable(),
            oauth_clients::kind,
            oauth_clients::name,
            oauth_clients::client_id,
            oauth_clients::secret_hash,
            oauth_clients::permissions,
            oauth_clients::revoked_at,
            oauth_clients::last_used_at,
            oauth_clients::created_at,
        )
    };
    (platform) => {
        (
            platform::id,
            diesel::dsl::sql::<Nullable<SqlUuid>>("NULL"),
            platform::kind,
            platform::name,
            platform::client_id,
            platform::secret_hash,
            platform::permissions,
            platform::revoked_at,
            platform::last_used_at,
            platform::created_at,
        )
    };
}

#[derive(Debug)]
pub struct NewClient<'a> {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub kind: &'a str,
    pub name: &'a str,
    pub client_id: &'a str,
    pub secret_hash: &'a str,
    pub permissions: Vec<String>,
}

impl NewClient<'_> {
    /// Writes the client and its directory entry (`client_id` is unique
    /// across the platform by the directory's primary key).
    pub fn insert(&self, conn: &mut PgConnection) -> QueryResult<ClientRow> {
        diesel::insert_into(directory::table)
            .values((
                directory::client_id.eq(self.client_id),
                directory::tenant_id.eq(self.tenant_id),
            ))
            .execute(conn)?;
        match self.tenant_id {
            Some(t) => diesel::insert_into(oauth_clients::table)
                .values((
                    oauth_clients::id.eq(self.id),
                    oauth_clients::tenant_id.eq(t),
                    oauth_clients::kind.eq(self.kind),
                    oauth_clients::name.eq(self.name),
                    oauth_clients::client_id.eq(self.client_id),
                    oauth_clients::secret_hash.eq(self.secret_hash),
                    oauth_clients::permissions.eq(&self.permissions),
                ))
                .returning(columns!(tenant))
                .get_result(conn),
            None => diesel::insert_into(platform::table)
                .values((
                    platform::id.eq(self.id),
                    platform::kind.eq(self.kind),
                    platform::name.eq(self.name),
                    platform::client_id.eq(self.client_id),
                    platform::secret_hash.eq(self.secret_hash),
                    platform::permissions.eq(&self.permissions),
                ))
                .returning(columns!(platform))
                .get_result(conn),
        }
    }
}

/// A client by its public `client_id`, with its tenant's status (token
/// endpoint): the directory names the owner, then the row is read there.
pub fn find_by_client_id(
    conn: &mut PgConnection,
    client_id: &str,
) -> QueryResult<Option<(ClientRow, Option<String>)>> {
    let owner: Option<Option<Uuid>> = directory::table
        .filter(directory::client_id.eq(client_id))
        .select(directory::tenant_id)
        .first(conn)
        .optional()?;
    match owner {
        None => Ok(None),
        Some(Some(t)) => oauth_clients::table
            .inner_join(tenants::table)
            .filter(oauth_clients::tenant_id.eq(t))
            .filter(oauth_clients::client_id.eq(client_id))
            .select((columns!(tenant), tenants::status.nullable()))
            .first(conn)
            .optional(),
        Some(None) => platform::table
            .filter(platform::client_id.eq(client_id))
            .select((
                columns!(platform),
                diesel::dsl::sql::<Nullable<Text>>("NULL"),
            ))
            .first(conn)
            .optional(),
    }
}

/// One client of the owner (a tenant, or the platform with `None`).
pub fn find(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    id: Uuid,
) -> QueryResult<Option<ClientRow>> {
    match tenant {
        Some(t) => oauth_clients::table
            .filter(oauth_clients::tenant_id.eq(t.0))
            .filter(oauth_clients::id.eq(id))
            .select(columns!(tenant))
            .first(conn)
            .optional(),
        None => platform::table
            .filter(platform::id.eq(id))
            .select(columns!(platform))
            .first(conn)
            .optional(),
    }
}

/// A page of one tenant's clients (`Some`) or of the platform clients (`None`).
pub fn list(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    page: PageRequest,
) -> QueryResult<Vec<ClientRow>> {
    match tenant {
        Some(t) => {
            let q = oauth_clients::table
                .filter(oauth_clients::tenant_id.eq(t.0))
                .select(columns!(tenant))
                .into_boxed();
            crate::keyset_page!(q, oauth_clients, page).load(conn)
        }
        None => {
            let q = platform::table.select(columns!(platform)).into_boxed();
            crate::keyset_page!(q, platform, page).load(conn)
        }
    }
}

/// Revokes one client of the given owner; `false` when it has no such client.
/// Revoking twice succeeds and keeps the first revocation time.
pub fn revoke(conn: &mut PgConnection, tenant: Option<TenantId>, id: Uuid) -> QueryResult<bool> {
    if find(conn, tenant, id)?.is_none() {
        return Ok(false);
    }
    match tenant {
        Some(t) => diesel::update(
            oauth_clients::table
                .filter(oauth_clients::tenant_id.eq(t.0))
                .filter(oauth_clients::id.eq(id))
                .filter(oauth_clients::revoked_at.is_null()),
        )
        .set(oauth_clients::revoked_at.eq(diesel::dsl::now))
        .execute(conn)?,
        None => diesel::update(
            platform::table
                .filter(platform::id.eq(id))
                .filter(platform::revoked_at.is_null()),
        )
        .set(platform::revoked_at.eq(diesel::dsl::now))
        .execute(conn)?,
    };
    Ok(true)
}

/// Writes many `last_used_at` values in one statement per table; never
/// moves one back. The batch names clients by id alone (the node's
/// collected uses, of any tenant and of the platform).
pub fn record_last_used(
    conn: &mut PgConnection,
    ids: Vec<Uuid>,
    times: Vec<DateTime<Utc>>,
) -> QueryResult<usize> {
    let mut n = 0;
    for table in ["oauth_clients", "platform_oauth_clients"] {
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

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = oauth_signing_keys)]
pub struct SigningKeyRow {
    pub id: Uuid,
    pub kid: String,
    pub private_key_enc: Vec<u8>,
    pub public_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub retires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = oauth_signing_keys)]
pub struct NewSigningKey<'a> {
    pub id: Uuid,
    pub kid: &'a str,
    pub private_key_enc: &'a [u8],
    pub public_key: &'a [u8],
}

/// Every key not yet retired, newest first (the first without `retires_at` signs).
pub fn live_signing_keys(conn: &mut PgConnection) -> QueryResult<Vec<SigningKeyRow>> {
    oauth_signing_keys::table
        .filter(
            oauth_signing_keys::retires_at
                .is_null()
                .or(oauth_signing_keys::retires_at.gt(diesel::dsl::now)),
        )
        .order((
            oauth_signing_keys::created_at.desc(),
            oauth_signing_keys::id.desc(),
        ))
        .select(SigningKeyRow::as_select())
        .load(conn)
}

/// Serialises key creation across nodes (first start, rotation) for the
/// rest of the transaction.
pub fn lock_signing_keys(conn: &mut PgConnection) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('postline.oauth_signing_keys'))")
        .execute(conn)
        .map(|_| ())
}

pub fn insert_signing_key(conn: &mut PgConnection, key: &NewSigningKey<'_>) -> QueryResult<()> {
    diesel::insert_into(oauth_signing_keys::table)
        .values(key)
        .execute(conn)
        .map(|_| ())
}

/// Schedules every current key except `keep` to retire at `at`; returns how many.
pub fn retire_others(conn: &mut PgConnection, keep: Uuid, at: DateTime<Utc>) -> QueryResult<usize> {
    diesel::update(
        oauth_signing_keys::table
            .filter(oauth_signing_keys::id.ne(keep))
            .filter(oauth_signing_keys::retires_at.is_null()),
    )
    .set(oauth_signing_keys::retires_at.eq(at))
    .execute(conn)
}

/// Deletes keys retired before `before` (they verify nothing any more).
pub fn purge_retired(conn: &mut PgConnection, before: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(oauth_signing_keys::table.filter(oauth_signing_keys::retires_at.lt(before)))
        .execute(conn)
}
