//! The SQL of the console's second factor: the TOTP columns of the users'
//! tables (`console_users`, `platform_console_users`) and the pending
//! sign-ins (`console_login_challenges`, keyed `(tenant_id, token_hash)`,
//! and `platform_console_login_challenges`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use uuid::Uuid;

use super::owner::{by_owner, insert_owned, Owner, Scope};
use crate::db::schema::console_login_challenges;

/// A user's TOTP state.
#[derive(Clone)]
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

impl TotpRow {
    pub fn owner(&self) -> Owner {
        Owner::of(self.tenant_id)
    }
}

type TotpColumns = (Uuid, String, Option<Vec<u8>>, bool, Option<i64>);

macro_rules! totp_columns {
    ($t:ident) => {
        (
            $t::id,
            $t::email,
            $t::totp_secret_enc,
            $t::totp_enabled,
            $t::totp_last_step,
        )
    };
}

fn totp_row(owner: Owner, c: TotpColumns) -> TotpRow {
    TotpRow {
        id: c.0,
        tenant_id: owner.tenant(),
        email: c.1,
        totp_secret_enc: c.2,
        totp_enabled: c.3,
        totp_last_step: c.4,
    }
}

/// `owner`'s user `user`, locked with `lock`.
fn read(
    conn: &mut PgConnection,
    owner: Owner,
    user: Uuid,
    lock: bool,
) -> QueryResult<Option<TotpRow>> {
    let found: Option<TotpColumns> =
        by_owner!(owner, console_users | platform_console_users, |t, rows| {
            let q = rows.filter(t::id.eq(user)).select(totp_columns!(t));
            if lock {
                q.for_update().first(conn).optional()?
            } else {
                q.first(conn).optional()?
            }
        });
    Ok(found.map(|c| totp_row(owner, c)))
}

pub fn totp_of(conn: &mut PgConnection, owner: Owner, user: Uuid) -> QueryResult<Option<TotpRow>> {
    read(conn, owner, user, false)
}

pub fn totp_for_update(
    conn: &mut PgConnection,
    owner: Owner,
    user: Uuid,
) -> QueryResult<Option<TotpRow>> {
    read(conn, owner, user, true)
}

/// A user by e-mail (the directory names the owner), locked.
pub fn totp_by_email_for_update(
    conn: &mut PgConnection,
    email: &str,
) -> QueryResult<Option<TotpRow>> {
    let Some(owner) = super::model::owner_of_email(conn, email)? else {
        return Ok(None);
    };
    let found: Option<TotpColumns> =
        by_owner!(owner, console_users | platform_console_users, |t, rows| {
            rows.filter(t::email.eq(email))
                .select(totp_columns!(t))
                .for_update()
                .first(conn)
                .optional()?
        });
    Ok(found.map(|c| totp_row(owner, c)))
}

/// A new, not yet confirmed secret (replaces an unconfirmed one; never an
/// enabled one).
pub fn set_pending(
    conn: &mut PgConnection,
    owner: Owner,
    user: Uuid,
    sealed: &[u8],
) -> QueryResult<usize> {
    by_owner!(owner, console_users | platform_console_users, |t, rows| {
        diesel::update(
            rows.filter(t::id.eq(user))
                .filter(t::totp_enabled.eq(false)),
        )
        .set((
            t::totp_secret_enc.eq(sealed),
            t::totp_last_step.eq(None::<i64>),
        ))
        .execute(conn)
    })
}

/// Confirms the pending secret `sealed` with a code of `step`.
pub fn enable(
    conn: &mut PgConnection,
    owner: Owner,
    user: Uuid,
    sealed: &[u8],
    step: i64,
) -> QueryResult<bool> {
    by_owner!(owner, console_users | platform_console_users, |t, rows| {
        diesel::update(
            rows.filter(t::id.eq(user))
                .filter(t::totp_enabled.eq(false))
                .filter(t::totp_secret_enc.eq(sealed)),
        )
        .set((t::totp_enabled.eq(true), t::totp_last_step.eq(step)))
        .execute(conn)
        .map(|n| n == 1)
    })
}

/// Records `step` as used, only if no code of it or a later step was used
/// before (false: a replay, or TOTP went off meanwhile).
pub fn use_step(conn: &mut PgConnection, owner: Owner, user: Uuid, step: i64) -> QueryResult<bool> {
    by_owner!(owner, console_users | platform_console_users, |t, rows| {
        diesel::update(
            rows.filter(t::id.eq(user))
                .filter(t::totp_enabled.eq(true))
                .filter(t::totp_last_step.is_null().or(t::totp_last_step.lt(step))),
        )
        .set(t::totp_last_step.eq(step))
        .execute(conn)
        .map(|n| n == 1)
    })
}

/// Turns TOTP off and forgets the secret.
pub fn clear(conn: &mut PgConnection, owner: Owner, user: Uuid) -> QueryResult<usize> {
    by_owner!(owner, console_users | platform_console_users, |t, rows| {
        diesel::update(rows.filter(t::id.eq(user)))
            .set((
                t::totp_secret_enc.eq(None::<Vec<u8>>),
                t::totp_enabled.eq(false),
                t::totp_last_step.eq(None::<i64>),
            ))
            .execute(conn)
    })
}

pub fn insert_challenge(
    conn: &mut PgConnection,
    owner: Owner,
    token_hash: &[u8],
    user: Uuid,
    expires_at: DateTime<Utc>,
) -> QueryResult<usize> {
    insert_owned!(conn, owner, console_login_challenges | platform_console_login_challenges, {
        token_hash: token_hash,
        user_id: user,
        expires_at: expires_at,
    })
}

/// The user of a live challenge in `scope`.
pub fn challenge_user(
    conn: &mut PgConnection,
    scope: Scope,
    token_hash: &[u8],
) -> QueryResult<Option<(Owner, Uuid)>> {
    let of = |conn: &mut PgConnection, owner: Owner| -> QueryResult<Option<Uuid>> {
        by_owner!(
            owner,
            console_login_challenges | platform_console_login_challenges,
            |t, rows| {
                rows.filter(t::token_hash.eq(token_hash))
                    .filter(t::expires_at.gt(diesel::dsl::now))
                    .select(t::user_id)
                    .first(conn)
                    .optional()
            }
        )
    };
    match scope {
        Scope::Of(owner) => Ok(of(conn, owner)?.map(|u| (owner, u))),
        Scope::Unnamed => {
            if let Some(u) = of(conn, Owner::Platform)? {
                return Ok(Some((Owner::Platform, u)));
            }
            use console_login_challenges as t;
            let found: Option<(Uuid, Uuid)> = t::table
                .filter(t::token_hash.eq(token_hash))
                .filter(t::expires_at.gt(diesel::dsl::now))
                .select((t::tenant_id, t::user_id))
                .first(conn)
                .optional()?;
            Ok(found.map(|(tenant, u)| (Owner::Tenant(tenant), u)))
        }
    }
}

/// Uses up a live challenge of `user` (false: gone meanwhile).
pub fn take_challenge(
    conn: &mut PgConnection,
    owner: Owner,
    token_hash: &[u8],
    user: Uuid,
) -> QueryResult<bool> {
    by_owner!(
        owner,
        console_login_challenges | platform_console_login_challenges,
        |t, rows| {
            diesel::delete(
                rows.filter(t::token_hash.eq(token_hash))
                    .filter(t::user_id.eq(user))
                    .filter(t::expires_at.gt(diesel::dsl::now)),
            )
            .execute(conn)
            .map(|n| n == 1)
        }
    )
}

/// Counts a wrong code against a challenge; at `max` failures it is
/// deleted. Returns whether it is still usable.
pub fn fail_challenge(
    conn: &mut PgConnection,
    owner: Owner,
    token_hash: &[u8],
    max: i32,
) -> QueryResult<bool> {
    let failures: Option<i32> = by_owner!(
        owner,
        console_login_challenges | platform_console_login_challenges,
        |t, rows| {
            diesel::update(rows.filter(t::token_hash.eq(token_hash)))
                .set(t::failures.eq(t::failures + 1))
                .returning(t::failures)
                .get_result(conn)
                .optional()?
        }
    );
    match failures {
        Some(n) if n < max => Ok(true),
        Some(_) => {
            by_owner!(
                owner,
                console_login_challenges | platform_console_login_challenges,
                |t, rows| diesel::delete(rows.filter(t::token_hash.eq(token_hash)))
                    .execute(conn)?
            );
            Ok(false)
        }
        None => Ok(false),
    }
}

pub fn delete_challenges_of(
    conn: &mut PgConnection,
    owner: Owner,
    user: Uuid,
) -> QueryResult<usize> {
    by_owner!(
        owner,
        console_login_challenges | platform_console_login_challenges,
        |t, rows| diesel::delete(rows.filter(t::user_id.eq(user))).execute(conn)
    )
}

/// Expired challenges, at most `limit` per table.
pub fn purge_expired(conn: &mut PgConnection, limit: i64) -> QueryResult<usize> {
    let mut n = 0;
    for (table, key) in [
        ("console_login_challenges", "tenant_id, token_hash"),
        ("platform_console_login_challenges", "token_hash"),
    ] {
        n += diesel::sql_query(format!(
            "DELETE FROM {table} WHERE ({key}) IN \
             (SELECT {key} FROM {table} WHERE expires_at < now() LIMIT $1)"
        ))
        .bind::<BigInt, _>(limit)
        .execute(conn)?;
    }
    Ok(n)
}
