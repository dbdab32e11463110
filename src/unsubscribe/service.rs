//! What an unsubscribe does: the recipient suppressed for the token's
//! tenant and stream (reason `unsubscribe`), a signed `email.unsubscribed`
//! webhook and usage `emails_unsubscribed`, in one transaction; repeating
//! it changes nothing more.

use diesel::prelude::*;
use diesel::sql_types::{Text, Uuid as SqlUuid};

use super::token::{Unsubscribe, UnsubscribeKeys};
use crate::db::{self, PgPool};
use crate::domain::TenantId;
use crate::error::{AppError, AppResult};

/// The webhook event of an unsubscribe.
pub const EVENT: &str = "email.unsubscribed";

/// Verifies `token` (a forged or unknown one, or a deleted tenant's: 404)
/// and applies it. `via` is kept as the entry's detail (`one-click`, `mailto`).
pub async fn unsubscribe(
    keys: &UnsubscribeKeys,
    pool: &PgPool,
    token: &str,
    via: &'static str,
) -> AppResult<Unsubscribe> {
    let u = keys.verify(token).ok_or(AppError::NotFound)?;
    let found = u.clone();
    db::run(pool, move |conn| {
        conn.transaction(|conn| apply(conn, &u, via))
            .map_err(AppError::from)?
            .then_some(())
            .ok_or(AppError::NotFound)
    })
    .await?;
    Ok(found)
}

/// The keys of `settings` (500 when the master key is unusable, which
/// startup already refuses).
pub fn keys(settings: &crate::config::Settings) -> AppResult<UnsubscribeKeys> {
    UnsubscribeKeys::from_settings(settings).map_err(|e| AppError::internal("unsubscribe keys", e))
}

/// True when the tenant exists (not deleted).
fn apply(conn: &mut PgConnection, u: &Unsubscribe, via: &str) -> QueryResult<bool> {
    use crate::db::schema::tenants;
    let live: Option<uuid::Uuid> = tenants::table
        .filter(tenants::id.eq(u.tenant_id))
        .filter(tenants::status.ne("deleted"))
        .select(tenants::id)
        .for_share()
        .first(conn)
        .optional()?;
    if live.is_none() {
        return Ok(false);
    }
    let stream = u.stream.as_str();
    let new = crate::suppressions::model::insert_unsubscribe(
        conn,
        TenantId(u.tenant_id),
        &u.recipient,
        stream,
        via,
    )?;
    if !new {
        return Ok(true);
    }
    diesel::sql_query(crate::webhooks::outbox::to_outboxes(
        "SELECT gen_random_uuid(), w.id, t.id, NULL, $4, \
           jsonb_build_object('type', $4::text, \
             'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
             'data', jsonb_build_object('tenant_id', t.id, 'external_tenant_id', t.external_id, \
                                        'recipient', $2::text, 'stream', $3::text)), \
           now(), now(), w.tenant_id IS NULL \
         FROM tenants t JOIN webhook_subscribers w \
           ON (w.tenant_id = t.id OR w.tenant_id IS NULL) AND w.enabled \
          AND ('*' = ANY (w.events) OR $4 = ANY (w.events)) \
         WHERE t.id = $1",
    ))
    .bind::<SqlUuid, _>(u.tenant_id)
    .bind::<Text, _>(&u.recipient)
    .bind::<Text, _>(stream)
    .bind::<Text, _>(EVENT)
    .execute(conn)?;
    let mut counts = std::collections::BTreeMap::new();
    counts.insert(
        u.tenant_id,
        crate::usage::model::Counters {
            emails_unsubscribed: 1,
            ..Default::default()
        },
    );
    crate::usage::model::add(conn, chrono::Utc::now().date_naive(), 1, &counts)?;
    let mut by_stream = crate::usage::streams::StreamDeltas::new();
    by_stream
        .entry((u.tenant_id, stream))
        .or_default()
        .emails_unsubscribed = 1;
    crate::usage::streams::add(conn, chrono::Utc::now().date_naive(), 1, &by_stream)?;
    Ok(true)
}
