//! `Idempotency-Key` storage. The primary key serialises concurrent
//! duplicates: the second INSERT waits for the first to commit and then sees
//! its row, so exactly one request queues mail.
//!
//! A key is scoped by the tenant (`idempotency_keys`, keyed by
//! `(tenant_id, key)`, distributed with the tenant's data), or, for an admin
//! batch whose messages span tenants, by the admin key
//! (`platform_idempotency_keys`, a reference table: no one tenant owns it).

use diesel::prelude::*;
use diesel::sql_types::{Bytea, Integer, Jsonb, Text, Uuid as SqlUuid};
use uuid::Uuid;

/// Whose key space an `Idempotency-Key` lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every message of the request belongs to this tenant.
    Tenant(Uuid),
    /// An admin request across tenants: the admin key's own space.
    Platform(Uuid),
}

impl Scope {
    /// The table and its scope column.
    fn table(self) -> (&'static str, &'static str, Uuid) {
        match self {
            Scope::Tenant(t) => ("idempotency_keys", "tenant_id", t),
            Scope::Platform(k) => ("platform_idempotency_keys", "admin_key_id", k),
        }
    }
}

/// The stored first response of a key.
#[derive(Debug, QueryableByName)]
pub struct StoredResponse {
    #[diesel(sql_type = Bytea)]
    pub request_hash: Vec<u8>,
    #[diesel(sql_type = Integer)]
    pub status_code: i32,
    #[diesel(sql_type = Jsonb)]
    pub response: serde_json::Value,
}

/// Claims `(scope, key)` for this request. `true` when the claim is new (or
/// replaced an entry older than 24 h); `false` when a live entry exists.
pub fn claim(
    conn: &mut PgConnection,
    scope: Scope,
    key: &str,
    request_hash: &[u8],
    status_code: i32,
    response: &serde_json::Value,
) -> QueryResult<bool> {
    let (table, column, id) = scope.table();
    let n = diesel::sql_query(format!(
        "INSERT INTO {table} ({column}, key, request_hash, status_code, response) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT ({column}, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, \
           status_code = EXCLUDED.status_code, response = EXCLUDED.response, created_at = now() \
         WHERE {table}.created_at < now() - interval '24 hours'"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(key)
    .bind::<Bytea, _>(request_hash)
    .bind::<Integer, _>(status_code)
    .bind::<Jsonb, _>(response)
    .execute(conn)?;
    Ok(n == 1)
}

pub fn find(
    conn: &mut PgConnection,
    scope: Scope,
    key: &str,
) -> QueryResult<Option<StoredResponse>> {
    let (table, column, id) = scope.table();
    diesel::sql_query(format!(
        "SELECT request_hash, status_code, response FROM {table} WHERE {column} = $1 AND key = $2"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(key)
    .get_result(conn)
    .optional()
}

/// Forgets entries older than 24 h (called periodically).
pub fn purge_expired(conn: &mut PgConnection) -> QueryResult<usize> {
    let tenants = diesel::sql_query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'",
    )
    .execute(conn)?;
    let platform = diesel::sql_query(
        "DELETE FROM platform_idempotency_keys WHERE created_at < now() - interval '24 hours'",
    )
    .execute(conn)?;
    Ok(tenants + platform)
}
