//! The SQL of the console's second factor: the TOTP columns of
//! `console_users` and the pending sign-ins (`console_login_challenges`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use uuid::Uuid;

use crate::db::schema::{console_login_challenges, console_sessions, console_users};

/// A user's TOTP state.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = console_users)]
pub struct TotpRow {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub email: String,
    pub totp_secret_enc: Option<Vec<u8>>,
    pub totp_enabled: bool,
    pub totp_last_step: Option<i64>,
}

impl std::fmt::Debug for TotpRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRow")
            .field("id", &self.id)
            .field("totp_enabled", &self.totp_enabled)
            .finish_non_exhaustive()
    }
}

pub fn totp_of(conn: &mut PgConnection, user: Uuid) -> QueryResult<Option<TotpRow>> {
    console_users::table
        .find(user)
        .select(TotpRow::as_select())
        .first(conn)
        .optional()
}

pub fn totp_for_update(conn: &mut PgConnection, user: Uuid) -> QueryResult<Option<TotpRow>> {
    console_users::table
        .find(user)
        .select(TotpRow::as_select())
        .for_update()
        .first(conn)
        .optional()
}

pub fn totp_by_email_for_update(
    conn: &mut PgConnection,
    email: &str,
) -> QueryResult<Option<TotpRow>> {
    console_users::table
        .filter(console_users::email.eq(email))
        .select(TotpRow::as_select())
        .for_update()
        .first(conn)
        .optional()
}

/// A new, not yet confirmed secret (replaces an unconfirmed one; never an
/// enabled one).
pub fn set_pending(conn: &mut PgConnection, user: Uuid, sealed: &[u8]) -> QueryResult<usize> {
    diesel::update(
        console_users::table
            .find(user)
            .filter(console_users::totp_enabled.eq(false)),
    )
    .set((
        console_users::totp_secret_enc.eq(sealed),
        console_users::totp_last_step.eq(None::<i64>),
    ))
    .execute(conn)
}

/// Confirms the pending secret `sealed` with a code of `step`.
pub fn enable(conn: &mut PgConnection, user: Uuid, sealed: &[u8], step: i64) -> QueryResult<bool> {
    diesel::update(
        console_users::table
            .find(user)
            .filter(console_users::totp_enabled.eq(false))
            .filter(console_users::totp_secret_enc.eq(sealed)),
    )
    .set((
        console_users::totp_enabled.eq(true),
        console_users::totp_last_step.eq(step),
    ))
    .execute(conn)
    .map(|n| n == 1)
}

/// Records `step` as used, only if no code of it or a later step was used
/// before (false: a replay, or TOTP went off meanwhile).
pub fn use_step(conn: &mut PgConnection, user: Uuid, step: i64) -> QueryResult<bool> {
    diesel::update(
        console_users::table
            .find(user)
            .filter(console_users::totp_enabled.eq(true))
            .filter(
                console_users::totp_last_step
                    .is_null()
                    .or(console_users::totp_last_step.lt(step)),
            ),
    )
    .set(console_users::totp_last_step.eq(step))
    .execute(conn)
    .map(|n| n == 1)
}

/// Turns TOTP off and forgets the secret.
pub fn clear(conn: &mut PgConnection, user: Uuid) -> QueryResult<usize> {
    diesel::update(console_users::table.find(user))
        .set((
            console_users::totp_secret_enc.eq(None::<Vec<u8>>),
            console_users::totp_enabled.eq(false),
            console_users::totp_last_step.eq(None::<i64>),
        ))
        .execute(conn)
}

/// Ends every session of `user` but the one whose token hash is `keep`.
pub fn delete_other_sessions(
    conn: &mut PgConnection,
    user: Uuid,
    keep: &[u8],
) -> QueryResult<usize> {
    diesel::delete(
        console_sessions::table
            .filter(console_sessions::user_id.eq(user))
            .filter(console_sessions::token_hash.ne(keep)),
    )
    .execute(conn)
}

#[derive(Insertable)]
#[diesel(table_name = console_login_challenges)]
pub struct NewChallenge<'a> {
    pub token_hash: &'a [u8],
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

pub fn insert_challenge(conn: &mut PgConnection, c: &NewChallenge<'_>) -> QueryResult<usize> {
    diesel::insert_into(console_login_challenges::table)
        .values(c)
        .execute(conn)
}

/// The user of a live challenge.
pub fn challenge_user(conn: &mut PgConnection, token_hash: &[u8]) -> QueryResult<Option<Uuid>> {
    console_login_challenges::table
        .filter(console_login_challenges::token_hash.eq(token_hash))
        .filter(console_login_challenges::expires_at.gt(diesel::dsl::now))
        .select(console_login_challenges::user_id)
        .first(conn)
        .optional()
}

/// Uses up a live challenge of `user` (false: gone meanwhile).
pub fn take_challenge(conn: &mut PgConnection, token_hash: &[u8], user: Uuid) -> QueryResult<bool> {
    diesel::delete(
        console_login_challenges::table
            .filter(console_login_challenges::token_hash.eq(token_hash))
            .filter(console_login_challenges::user_id.eq(user))
            .filter(console_login_challenges::expires_at.gt(diesel::dsl::now)),
    )
    .execute(conn)
    .map(|n| n == 1)
}

/// Counts a wrong code against a challenge; at `max` failures it is
/// deleted. Returns whether it is still usable.
pub fn fail_challenge(conn: &mut PgConnection, token_hash: &[u8], max: i32) -> QueryResult<bool> {
    let failures: Option<i32> = diesel::update(
        console_login_challenges::table.filter(console_login_challenges::token_hash.eq(token_hash)),
    )
    .set(console_login_challenges::failures.eq(console_login_challenges::failures + 1))
    .returning(console_login_challenges::failures)
    .get_result(conn)
    .optional()?;
    match failures {
        Some(n) if n < max => Ok(true),
        Some(_) => {
            diesel::delete(console_login_challenges::table.find(token_hash)).execute(conn)?;
            Ok(false)
        }
        None => Ok(false),
    }
}

pub fn delete_challenges_of(conn: &mut PgConnection, user: Uuid) -> QueryResult<usize> {
    diesel::delete(
        console_login_challenges::table.filter(console_login_challenges::user_id.eq(user)),
    )
    .execute(conn)
}

/// Expired challenges, at most `limit`.
pub fn purge_expired(conn: &mut PgConnection, limit: i64) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM console_login_challenges WHERE token_hash IN \
         (SELECT token_hash FROM console_login_challenges WHERE expires_at < now() LIMIT $1)",
    )
    .bind::<BigInt, _>(limit)
    .execute(conn)
}
