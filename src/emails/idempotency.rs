//! `Idempotency-Key` storage. The primary key `(scope, key)` serialises
//! concurrent duplicates: the second INSERT waits for the first to commit and
//! then sees its row, so exactly one request queues mail.

use diesel::prelude::*;
use diesel::sql_types::{Bytea, Integer, Jsonb, Text, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::schema::idempotency_keys;

/// The stored first response of a key.
#[derive(Debug, Queryable)]
pub struct StoredResponse {
    pub request_hash: Vec<u8>,
    pub status_code: i32,
    pub response: serde_json::Value,
}

/// Claims `(scope, key)` for this request. `true` when the claim is new (or
/// replaced an entry older than 24 h); `false` when a live entry exists.
pub fn claim(
    conn: &mut PgConnection,
    scope: Uuid,
    key: &str,
    request_hash: &[u8],
    status_code: i32,
    response: &serde_json::Value,
) -> QueryResult<bool> {
    let n = diesel::sql_query(
        "INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (scope, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, \
           status_code = EXCLUDED.status_code, response = EXCLUDED.response, created_at = now() \
         WHERE idempotency_keys.created_at < now() - interval '24 hours'",
    )
    .bind::<SqlUuid, _>(scope)
    .bind::<Text, _>(key)
    .bind::<Bytea, _>(request_hash)
    .bind::<Integer, _>(status_code)
    .bind::<Jsonb, _>(response)
    .execute(conn)?;
    Ok(n == 1)
}

pub fn find(
    conn: &mut PgConnection,
    scope: Uuid,
    key: &str,
) -> QueryResult<Option<StoredResponse>> {
    idempotency_keys::table
        .find((scope, key))
        .select((
            idempotency_keys::request_hash,
            idempotency_keys::status_code,
            idempotency_keys::response,
        ))
        .first(conn)
        .optional()
}

/// Forgets entries older than 24 h (called periodically).
pub fn purge_expired(conn: &mut PgConnection) -> QueryResult<usize> {
    diesel::sql_query("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'")
        .execute(conn)
}
