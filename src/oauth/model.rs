//! `oauth_clients` and `oauth_signing_keys` rows and their queries. Tenant
//! clients are always addressed with their tenant id, so another tenant's
//! client is simply "not found".

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::{oauth_clients, oauth_signing_keys, tenants};
use crate::domain::TenantId;

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = oauth_clients)]
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

#[derive(Debug, Insertable)]
#[diesel(table_name = oauth_clients)]
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
    pub fn insert(&self, conn: &mut PgConnection) -> QueryResult<ClientRow> {
        diesel::insert_into(oauth_clients::table)
            .values(self)
            .returning(ClientRow::as_returning())
            .get_result(conn)
    }
}

/// A client by its public `client_id`, with its tenant's status (token endpoint).
pub fn find_by_client_id(
    conn: &mut PgConnection,
    client_id: &str,
) -> QueryResult<Option<(ClientRow, Option<String>)>> {
    oauth_clients::table
        .left_join(tenants::table)
        .filter(oauth_clients::client_id.eq(client_id))
        .select((ClientRow::as_select(), tenants::status.nullable()))
        .first(conn)
        .optional()
}

/// A client by its row id, with its tenant's status (bearer token refill).
pub fn find_by_id(
    conn: &mut PgConnection,
    id: Uuid,
) -> QueryResult<Option<(ClientRow, Option<String>)>> {
    oauth_clients::table
        .left_join(tenants::table)
        .filter(oauth_clients::id.eq(id))
        .select((ClientRow::as_select(), tenants::status.nullable()))
        .first(conn)
        .optional()
}

/// A page of one tenant's clients (`Some`) or of the platform clients (`None`).
pub fn list(
    conn: &mut PgConnection,
    tenant: Option<TenantId>,
    page: PageRequest,
) -> QueryResult<Vec<ClientRow>> {
    let mut q = oauth_clients::table
        .select(ClientRow::as_select())
        .order((oauth_clients::created_at.desc(), oauth_clients::id.desc()))
        .limit(page.limit + 1)
        .into_boxed();
    q = match tenant {
        Some(t) => q.filter(oauth_clients::tenant_id.eq(t.0)),
        None => q.filter(oauth_clients::tenant_id.is_null()),
    };
    if let Some(c) = page.after {
        q = q.filter(
            oauth_clients::created_at
                .lt(c.created_at)
                .or(oauth_clients::created_at
                    .eq(c.created_at)
                    .and(oauth_clients::id.lt(c.id))),
        );
    }
    q.load(conn)
}

/// Revokes one client of the given owner; `false` when it has no such client.
/// Revoking twice succeeds and keeps the first revocation time.
pub fn revoke(conn: &mut PgConnection, tenant: Option<TenantId>, id: Uuid) -> QueryResult<bool> {
    let target = oauth_clients::table
        .filter(oauth_clients::id.eq(id))
        .into_boxed();
    let target = match tenant {
        Some(t) => target.filter(oauth_clients::tenant_id.eq(t.0)),
        None => target.filter(oauth_clients::tenant_id.is_null()),
    };
    let exists: Option<Uuid> = target.select(oauth_clients::id).first(conn).optional()?;
    if exists.is_none() {
        return Ok(false);
    }
    diesel::update(
        oauth_clients::table
            .filter(oauth_clients::id.eq(id))
            .filter(oauth_clients::revoked_at.is_null()),
    )
    .set(oauth_clients::revoked_at.eq(diesel::dsl::now))
    .execute(conn)?;
    Ok(true)
}

/// Writes many `last_used_at` values in one statement; never moves one back.
pub fn record_last_used(
    conn: &mut PgConnection,
    ids: Vec<Uuid>,
    times: Vec<DateTime<Utc>>,
) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE oauth_clients SET last_used_at = \
         GREATEST(COALESCE(oauth_clients.last_used_at, u.t), u.t) \
         FROM unnest($1, $2) AS u(id, t) WHERE oauth_clients.id = u.id",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Timestamptz>, _>(times)
    .execute(conn)
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
