//! The SQL of console sessions and invitation links, by the SHA-256 of the
//! cookie's or link's token: a tenant user's in `console_sessions` /
//! `console_invitations` (keyed `(tenant_id, token_hash)`), an admin's in
//! `platform_console_sessions` / `platform_console_invitations`. Where to
//! look is the token's [`Scope`].

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use uuid::Uuid;

use super::model::{user_columns, user_row, UserColumns, UserRow};
use super::owner::{by_owner, insert_owned, Owner, Scope};
use crate::db::schema::{
    console_invitations, console_sessions, console_users, platform_console_sessions,
    platform_console_users, tenants,
};

pub struct NewSession<'a> {
    pub token_hash: &'a [u8],
    pub user_id: Uuid,
    pub csrf_token: &'a str,
    pub expires_at: DateTime<Utc>,
}

pub fn insert_session(
    conn: &mut PgConnection,
    owner: Owner,
    s: &NewSession<'_>,
) -> QueryResult<usize> {
    insert_owned!(conn, owner, console_sessions | platform_console_sessions, {
        token_hash: s.token_hash,
        user_id: s.user_id,
        csrf_token: s.csrf_token,
        expires_at: s.expires_at,
    })
}

/// What a live session holds: its user, the CSRF token and the user's
/// tenant status (`None` for admins).
pub type LiveSession = (UserRow, String, Option<String>);

/// A live session in `scope`.
pub fn session(
    conn: &mut PgConnection,
    scope: Scope,
    token_hash: &[u8],
) -> QueryResult<Option<LiveSession>> {
    match scope {
        Scope::Of(Owner::Platform) => platform_session(conn, token_hash),
        Scope::Of(Owner::Tenant(t)) => tenant_session(conn, Some(t), token_hash),
        Scope::Unnamed => match platform_session(conn, token_hash)? {
            Some(found) => Ok(Some(found)),
            None => tenant_session(conn, None, token_hash),
        },
    }
}

fn platform_session(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> QueryResult<Option<LiveSession>> {
    let found: Option<(UserColumns, String)> = platform_console_sessions::table
        .inner_join(platform_console_users::table)
        .filter(platform_console_sessions::token_hash.eq(token_hash))
        .filter(platform_console_sessions::expires_at.gt(diesel::dsl::now))
        .select((
            user_columns!(platform_console_users),
            platform_console_sessions::csrf_token,
        ))
        .first(conn)
        .optional()?;
    Ok(found.map(|(c, csrf)| (user_row(Owner::Platform, c), csrf, None)))
}

/// A tenant user's session: of `tenant`, or (a token that names no owner)
/// of any tenant.
fn tenant_session(
    conn: &mut PgConnection,
    tenant: Option<Uuid>,
    token_hash: &[u8],
) -> QueryResult<Option<LiveSession>> {
    let mut q = console_sessions::table
        .inner_join(
            console_users::table.on(console_users::tenant_id
                .eq(console_sessions::tenant_id)
                .and(console_users::id.eq(console_sessions::user_id))),
        )
        .inner_join(tenants::table.on(tenants::id.eq(console_sessions::tenant_id)))
        .filter(console_sessions::token_hash.eq(token_hash))
        .filter(console_sessions::expires_at.gt(diesel::dsl::now))
        .select((
            console_sessions::tenant_id,
            user_columns!(console_users),
            console_sessions::csrf_token,
            tenants::status,
        ))
        .into_boxed();
    if let Some(t) = tenant {
        q = q.filter(console_sessions::tenant_id.eq(t));
    }
    let found: Option<(Uuid, UserColumns, String, String)> = q.first(conn).optional()?;
    Ok(found.map(|(t, c, csrf, status)| (user_row(Owner::Tenant(t), c), csrf, Some(status))))
}

pub fn delete_session(
    conn: &mut PgConnection,
    owner: Owner,
    token_hash: &[u8],
) -> QueryResult<usize> {
    by_owner!(
        owner,
        console_sessions | platform_console_sessions,
        |t, rows| diesel::delete(rows.filter(t::token_hash.eq(token_hash))).execute(conn)
    )
}

/// "Log out everywhere": every session of the user.
pub fn delete_sessions_of(conn: &mut PgConnection, owner: Owner, user: Uuid) -> QueryResult<usize> {
    by_owner!(
        owner,
        console_sessions | platform_console_sessions,
        |t, rows| diesel::delete(rows.filter(t::user_id.eq(user))).execute(conn)
    )
}

/// Ends every session of `user` but the one whose token hash is `keep`.
pub fn delete_other_sessions(
    conn: &mut PgConnection,
    owner: Owner,
    user: Uuid,
    keep: &[u8],
) -> QueryResult<usize> {
    by_owner!(
        owner,
        console_sessions | platform_console_sessions,
        |t, rows| {
            diesel::delete(
                rows.filter(t::user_id.eq(user))
                    .filter(t::token_hash.ne(keep)),
            )
            .execute(conn)
        }
    )
}

/// Expired sessions and used or expired invitations, at most `limit` of
/// each kind per table (a sweep across tenants: bounded batches, no order).
pub fn purge_expired(conn: &mut PgConnection, limit: i64) -> QueryResult<usize> {
    let mut n = 0;
    let (expired, spent) = (
        "expires_at < now()",
        "expires_at < now() OR used_at IS NOT NULL",
    );
    for (table, key, gone) in [
        ("console_sessions", "tenant_id, token_hash", expired),
        ("platform_console_sessions", "token_hash", expired),
        ("console_invitations", "tenant_id, token_hash", spent),
        ("platform_console_invitations", "token_hash", spent),
    ] {
        n += diesel::sql_query(format!(
            "DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE {gone} LIMIT $1)"
        ))
        .bind::<BigInt, _>(limit)
        .execute(conn)?;
    }
    Ok(n)
}

pub fn insert_invitation(
    conn: &mut PgConnection,
    owner: Owner,
    token_hash: &[u8],
    user: Uuid,
    expires_at: DateTime<Utc>,
) -> QueryResult<usize> {
    insert_owned!(conn, owner, console_invitations | platform_console_invitations, {
        token_hash: token_hash,
        user_id: user,
        expires_at: expires_at,
    })
}

/// Marks an unused, unexpired invitation used and returns its user: a link
/// works once, whatever races it.
pub fn take_invitation(
    conn: &mut PgConnection,
    scope: Scope,
    token_hash: &[u8],
) -> QueryResult<Option<(Owner, Uuid)>> {
    let take = |conn: &mut PgConnection, owner: Owner| -> QueryResult<Option<Uuid>> {
        by_owner!(
            owner,
            console_invitations | platform_console_invitations,
            |t, rows| {
                diesel::update(
                    rows.filter(t::token_hash.eq(token_hash))
                        .filter(t::used_at.is_null())
                        .filter(t::expires_at.gt(diesel::dsl::now)),
                )
                .set(t::used_at.eq(diesel::dsl::now))
                .returning(t::user_id)
                .get_result(conn)
                .optional()
            }
        )
    };
    match scope {
        Scope::Of(owner) => Ok(take(conn, owner)?.map(|u| (owner, u))),
        Scope::Unnamed => {
            if let Some(u) = take(conn, Owner::Platform)? {
                return Ok(Some((Owner::Platform, u)));
            }
            use console_invitations as t;
            let found: Option<(Uuid, Uuid)> = diesel::update(
                t::table
                    .filter(t::token_hash.eq(token_hash))
                    .filter(t::used_at.is_null())
                    .filter(t::expires_at.gt(diesel::dsl::now)),
            )
            .set(t::used_at.eq(diesel::dsl::now))
            .returning((t::tenant_id, t::user_id))
            .get_result(conn)
            .optional()?;
            Ok(found.map(|(tenant, u)| (Owner::Tenant(tenant), u)))
        }
    }
}

/// Whether an invitation could still be used (the form's GET).
pub fn invitation_open(
    conn: &mut PgConnection,
    scope: Scope,
    token_hash: &[u8],
) -> QueryResult<bool> {
    let open = |conn: &mut PgConnection, owner: Option<Owner>| -> QueryResult<bool> {
        match owner {
            Some(owner) => by_owner!(
                owner,
                console_invitations | platform_console_invitations,
                |t, rows| {
                    diesel::select(diesel::dsl::exists(
                        rows.filter(t::token_hash.eq(token_hash))
                            .filter(t::used_at.is_null())
                            .filter(t::expires_at.gt(diesel::dsl::now)),
                    ))
                    .get_result(conn)
                }
            ),
            None => {
                use console_invitations as t;
                diesel::select(diesel::dsl::exists(
                    t::table
                        .filter(t::token_hash.eq(token_hash))
                        .filter(t::used_at.is_null())
                        .filter(t::expires_at.gt(diesel::dsl::now)),
                ))
                .get_result(conn)
            }
        }
    };
    match scope {
        Scope::Of(owner) => open(conn, Some(owner)),
        Scope::Unnamed => Ok(open(conn, Some(Owner::Platform))? || open(conn, None)?),
    }
}
