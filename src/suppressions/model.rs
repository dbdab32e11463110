//! `suppressions` rows and their queries; every query takes the tenant.
//! An entry whose `expires_at` has passed counts as absent everywhere (the
//! maintenance purge deletes it later).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::schema::suppressions;
use crate::domain::TenantId;

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = suppressions)]
pub struct SuppressionRow {
    pub tenant_id: Uuid,
    pub email: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub source_email_id: Option<Uuid>,
    pub detail: Option<String>,
    /// `broadcast` for an unsubscribe; `None`: every stream.
    pub stream: Option<String>,
}

/// A new entry (or a stronger reason for an existing one).
#[derive(Clone, Debug)]
pub struct NewSuppression {
    pub tenant_id: Uuid,
    pub email: String,
    pub reason: &'static str,
    pub expires_at: Option<DateTime<Utc>>,
    pub source_email_id: Option<Uuid>,
    pub detail: Option<String>,
}

/// Adds entries (every stream). An existing live complaint or manual entry
/// is kept as it is (it never expires); an unsubscribe (one stream) is
/// widened to every stream; a hard bounce entry is replaced by the new one
/// (a complaint upgrades it; a new hard bounce renews its expiry); an
/// expired entry is replaced. Returns the rows inserted or changed.
pub fn upsert(conn: &mut PgConnection, entries: &[NewSuppression]) -> QueryResult<usize> {
    if entries.is_empty() {
        return Ok(0);
    }
    let mut sorted: Vec<&NewSuppression> = entries.iter().collect();
    // One row per key per statement (ON CONFLICT DO UPDATE), in key order.
    sorted.sort_by(|a, b| (a.tenant_id, &a.email).cmp(&(b.tenant_id, &b.email)));
    sorted.dedup_by(|a, b| a.tenant_id == b.tenant_id && a.email == b.email);
    let t: Vec<Uuid> = sorted.iter().map(|e| e.tenant_id).collect();
    let m: Vec<&str> = sorted.iter().map(|e| e.email.as_str()).collect();
    let r: Vec<&str> = sorted.iter().map(|e| e.reason).collect();
    let x: Vec<Option<DateTime<Utc>>> = sorted.iter().map(|e| e.expires_at).collect();
    let s: Vec<Option<Uuid>> = sorted.iter().map(|e| e.source_email_id).collect();
    let d: Vec<Option<&str>> = sorted.iter().map(|e| e.detail.as_deref()).collect();
    diesel::sql_query(
        "INSERT INTO suppressions AS s (tenant_id, email, reason, expires_at, source_email_id, detail) \
         SELECT * FROM unnest($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id, email) DO UPDATE SET \
           reason = EXCLUDED.reason, expires_at = EXCLUDED.expires_at, \
           source_email_id = EXCLUDED.source_email_id, detail = EXCLUDED.detail, stream = NULL, \
           created_at = CASE WHEN s.expires_at IS NOT NULL AND s.expires_at <= now() \
                             THEN now() ELSE s.created_at END \
         WHERE s.reason IN ('hard_bounce', 'unsubscribe') OR (s.expires_at IS NOT NULL AND s.expires_at <= now())",
    )
    .bind::<Array<SqlUuid>, _>(&t)
    .bind::<Array<Text>, _>(&m)
    .bind::<Array<Text>, _>(&r)
    .bind::<Array<Nullable<Timestamptz>>, _>(&x)
    .bind::<Array<Nullable<SqlUuid>>, _>(&s)
    .bind::<Array<Nullable<Text>>, _>(&d)
    .execute(conn)
}

/// A manual entry: created, or 409 when a live entry exists.
pub fn insert_manual(
    conn: &mut PgConnection,
    entry: &NewSuppression,
) -> QueryResult<Option<SuppressionRow>> {
    conn.transaction(|conn| {
        // An expired entry is as good as absent.
        diesel::delete(
            suppressions::table
                .filter(suppressions::tenant_id.eq(entry.tenant_id))
                .filter(suppressions::email.eq(&entry.email))
                .filter(suppressions::expires_at.le(diesel::dsl::now)),
        )
        .execute(conn)?;
        diesel::insert_into(suppressions::table)
            .values((
                suppressions::tenant_id.eq(entry.tenant_id),
                suppressions::email.eq(&entry.email),
                suppressions::reason.eq(entry.reason),
                suppressions::expires_at.eq(entry.expires_at),
                suppressions::source_email_id.eq(entry.source_email_id),
                suppressions::detail.eq(entry.detail.as_deref()),
            ))
            .on_conflict_do_nothing()
            .returning(SuppressionRow::as_returning())
            .get_result(conn)
            .optional()
    })
}

/// An unsubscribe (issue 26): the address suppressed for `stream`, unless a
/// live entry exists (an every-stream entry already covers it). True when
/// the entry is new.
pub fn insert_unsubscribe(
    conn: &mut PgConnection,
    tenant: TenantId,
    email: &str,
    stream: &str,
    source: &str,
) -> QueryResult<bool> {
    let n = diesel::sql_query(
        "INSERT INTO suppressions AS s (tenant_id, email, reason, stream, detail) \
         VALUES ($1, $2, 'unsubscribe', $3, $4) \
         ON CONFLICT (tenant_id, email) DO UPDATE SET \
           reason = 'unsubscribe', stream = EXCLUDED.stream, expires_at = NULL, \
           source_email_id = NULL, detail = EXCLUDED.detail, created_at = now() \
         WHERE s.expires_at IS NOT NULL AND s.expires_at <= now()",
    )
    .bind::<SqlUuid, _>(tenant.0)
    .bind::<Text, _>(email)
    .bind::<Text, _>(stream)
    .bind::<Text, _>(source)
    .execute(conn)?;
    Ok(n > 0)
}

fn live() -> diesel::dsl::Or<
    diesel::dsl::IsNull<suppressions::expires_at>,
    diesel::dsl::Gt<suppressions::expires_at, diesel::dsl::now>,
> {
    suppressions::expires_at
        .is_null()
        .or(suppressions::expires_at.gt(diesel::dsl::now))
}

pub fn find(
    conn: &mut PgConnection,
    tenant: TenantId,
    email: &str,
) -> QueryResult<Option<SuppressionRow>> {
    suppressions::table
        .filter(suppressions::tenant_id.eq(tenant.0))
        .filter(suppressions::email.eq(email))
        .filter(live())
        .select(SuppressionRow::as_select())
        .first(conn)
        .optional()
}

/// Removes an entry; the live one that was there.
pub fn delete(
    conn: &mut PgConnection,
    tenant: TenantId,
    email: &str,
) -> QueryResult<Option<SuppressionRow>> {
    diesel::delete(
        suppressions::table
            .filter(suppressions::tenant_id.eq(tenant.0))
            .filter(suppressions::email.eq(email))
            .filter(live()),
    )
    .returning(SuppressionRow::as_returning())
    .get_result(conn)
    .optional()
}

/// Listing position: newest first.
#[derive(Clone, Debug)]
pub struct After {
    pub created_at: DateTime<Utc>,
    pub email: String,
}

pub fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    email: Option<&str>,
    reason: Option<&str>,
    after: Option<&After>,
    limit: i64,
) -> QueryResult<Vec<SuppressionRow>> {
    let mut q = suppressions::table
        .filter(suppressions::tenant_id.eq(tenant.0))
        .filter(live())
        .select(SuppressionRow::as_select())
        .order((suppressions::created_at.desc(), suppressions::email.desc()))
        .limit(limit)
        .into_boxed();
    if let Some(e) = email {
        q = q.filter(suppressions::email.eq(e.to_string()));
    }
    if let Some(r) = reason {
        q = q.filter(suppressions::reason.eq(r.to_string()));
    }
    if let Some(a) = after {
        q = q.filter(
            suppressions::created_at
                .lt(a.created_at)
                .or(suppressions::created_at
                    .eq(a.created_at)
                    .and(suppressions::email.lt(a.email.clone()))),
        );
    }
    q.load(conn)
}

/// Deletes expired entries (maintenance), at most `limit` at once.
pub fn purge_expired(conn: &mut PgConnection, limit: i64) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM suppressions WHERE ctid IN (SELECT ctid FROM suppressions \
           WHERE expires_at IS NOT NULL AND expires_at <= now() LIMIT $1)",
    )
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .execute(conn)
}

#[derive(QueryableByName)]
struct LiveEntry {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    email: String,
    #[diesel(sql_type = Text)]
    st: String,
}

/// Of `(tenant, bare address, stream)` triples, those on their tenant's live
/// suppression list for that stream (one statement per 10,000).
pub fn live_among(
    conn: &mut PgConnection,
    triples: &[(Uuid, String, String)],
) -> QueryResult<Vec<(Uuid, String, String)>> {
    let mut out = Vec::new();
    for chunk in triples.chunks(10_000) {
        let t: Vec<Uuid> = chunk.iter().map(|p| p.0).collect();
        let a: Vec<&str> = chunk.iter().map(|p| p.1.as_str()).collect();
        let st: Vec<&str> = chunk.iter().map(|p| p.2.as_str()).collect();
        let found: Vec<LiveEntry> = diesel::sql_query(
            "SELECT s.tenant_id, s.email, u.st FROM suppressions s \
             JOIN unnest($1, $2, $3) AS u(t, a, st) ON s.tenant_id = u.t AND s.email = u.a \
             WHERE (s.expires_at IS NULL OR s.expires_at > now()) \
               AND (s.stream IS NULL OR s.stream = u.st)",
        )
        .bind::<Array<SqlUuid>, _>(&t)
        .bind::<Array<Text>, _>(&a)
        .bind::<Array<Text>, _>(&st)
        .load(conn)?;
        out.extend(found.into_iter().map(|r| (r.tenant_id, r.email, r.st)));
    }
    Ok(out)
}
