//! The console's SQL: users (a tenant's in `console_users`, keyed
//! `(tenant_id, id)`; the platform's admins in `platform_console_users`;
//! `console_user_directory` maps each e-mail address to its owner and keeps
//! addresses unique platform-wide), and the admin queue overview. Sessions
//! and invitations: `session_model`. Tenant users are always read with their
//! tenant.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use super::owner::{by_owner, Owner};
use crate::db::schema::{console_user_directory as directory, console_users, tenants};

#[derive(Clone, Debug)]
pub struct UserRow {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub email: String,
    pub role: String,
    pub password_hash: Option<String>,
    pub created_at: DateTime<Utc>,
    pub totp_enabled: bool,
}

impl UserRow {
    pub fn owner(&self) -> Owner {
        Owner::of(self.tenant_id)
    }
}

/// The columns of a [`UserRow`] but its owner, in either table.
macro_rules! user_columns {
    ($t:ident) => {
        (
            $t::id,
            $t::email,
            $t::role,
            $t::password_hash,
            $t::created_at,
            $t::totp_enabled,
        )
    };
}
pub(crate) use user_columns;

pub(super) type UserColumns = (Uuid, String, String, Option<String>, DateTime<Utc>, bool);

/// A row of `owner`'s table as a [`UserRow`].
pub(super) fn user_row(owner: Owner, c: UserColumns) -> UserRow {
    UserRow {
        id: c.0,
        tenant_id: owner.tenant(),
        email: c.1,
        role: c.2,
        password_hash: c.3,
        created_at: c.4,
        totp_enabled: c.5,
    }
}

pub struct NewUser<'a> {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub email: &'a str,
    pub role: &'a str,
    pub password_hash: Option<&'a str>,
}

/// Writes the user and its directory entry (an address taken anywhere on
/// the platform is a unique violation of the directory's key).
pub fn insert_user(conn: &mut PgConnection, u: &NewUser<'_>) -> QueryResult<UserRow> {
    diesel::insert_into(directory::table)
        .values((
            directory::email.eq(u.email),
            directory::tenant_id.eq(u.tenant_id),
        ))
        .execute(conn)?;
    let owner = Owner::of(u.tenant_id);
    let row = match owner {
        Owner::Tenant(t) => diesel::insert_into(console_users::table)
            .values((
                console_users::id.eq(u.id),
                console_users::tenant_id.eq(t),
                console_users::email.eq(u.email),
                console_users::role.eq(u.role),
                console_users::password_hash.eq(u.password_hash),
            ))
            .returning(user_columns!(console_users))
            .get_result(conn)?,
        Owner::Platform => {
            use crate::db::schema::platform_console_users as p;
            diesel::insert_into(p::table)
                .values((
                    p::id.eq(u.id),
                    p::email.eq(u.email),
                    p::role.eq(u.role),
                    p::password_hash.eq(u.password_hash),
                ))
                .returning(user_columns!(p))
                .get_result(conn)?
        }
    };
    Ok(user_row(owner, row))
}

/// Whose the address is (the directory), if anyone's.
pub fn owner_of_email(conn: &mut PgConnection, email: &str) -> QueryResult<Option<Owner>> {
    let found: Option<Option<Uuid>> = directory::table
        .filter(directory::email.eq(email))
        .select(directory::tenant_id)
        .first(conn)
        .optional()?;
    Ok(found.map(Owner::of))
}

/// A user by e-mail with its tenant's status (`None` for admins): the
/// directory names the owner, the row is then read there.
pub fn user_by_email(
    conn: &mut PgConnection,
    email: &str,
) -> QueryResult<Option<(UserRow, Option<String>)>> {
    let Some(owner) = owner_of_email(conn, email)? else {
        return Ok(None);
    };
    let Some(user) = user_of(conn, owner, email, false)? else {
        return Ok(None);
    };
    let status = match owner {
        Owner::Tenant(t) => tenants::table
            .find(t)
            .select(tenants::status)
            .first(conn)
            .optional()?,
        Owner::Platform => None,
    };
    Ok(Some((user, status)))
}

/// `owner`'s user with this address, locked with `lock`.
fn user_of(
    conn: &mut PgConnection,
    owner: Owner,
    email: &str,
    lock: bool,
) -> QueryResult<Option<UserRow>> {
    let found = by_owner!(owner, console_users | platform_console_users, |t, rows| {
        let q = rows.filter(t::email.eq(email)).select(user_columns!(t));
        if lock {
            q.for_update().first(conn).optional()?
        } else {
            q.first(conn).optional()?
        }
    });
    Ok(found.map(|c| user_row(owner, c)))
}

/// The users of one tenant, oldest first (bounded: a team page).
pub fn users_of_tenant(conn: &mut PgConnection, tenant: Uuid) -> QueryResult<Vec<UserRow>> {
    let rows: Vec<UserColumns> = console_users::table
        .filter(console_users::tenant_id.eq(tenant))
        .order((console_users::created_at, console_users::id))
        .limit(200)
        .select(user_columns!(console_users))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|c| user_row(Owner::Tenant(tenant), c))
        .collect())
}

/// The ids of `tenant`'s owners, locked until the transaction ends.
pub fn owners_for_update(conn: &mut PgConnection, tenant: Uuid) -> QueryResult<Vec<Uuid>> {
    console_users::table
        .filter(console_users::tenant_id.eq(tenant))
        .filter(console_users::role.eq("owner"))
        .select(console_users::id)
        .for_update()
        .load(conn)
}

/// One user of `tenant`, locked (`None`: not a user of that tenant).
pub fn tenant_user_for_update(
    conn: &mut PgConnection,
    tenant: Uuid,
    user: Uuid,
) -> QueryResult<Option<UserRow>> {
    let found: Option<UserColumns> = console_users::table
        .filter(console_users::tenant_id.eq(tenant))
        .filter(console_users::id.eq(user))
        .select(user_columns!(console_users))
        .for_update()
        .first(conn)
        .optional()?;
    Ok(found.map(|c| user_row(Owner::Tenant(tenant), c)))
}

pub fn set_role(
    conn: &mut PgConnection,
    tenant: Uuid,
    user: Uuid,
    role: &str,
) -> QueryResult<usize> {
    diesel::update(
        console_users::table
            .filter(console_users::tenant_id.eq(tenant))
            .filter(console_users::id.eq(user)),
    )
    .set(console_users::role.eq(role))
    .execute(conn)
}

/// Deletes a user of `owner` and its directory entry (the address is free
/// again); its sessions, invitations and challenges go with it (ON DELETE
/// CASCADE).
pub fn delete_user(conn: &mut PgConnection, owner: Owner, user: Uuid) -> QueryResult<usize> {
    let emails: Vec<String> =
        by_owner!(owner, console_users | platform_console_users, |t, rows| {
            diesel::delete(rows.filter(t::id.eq(user)))
                .returning(t::email)
                .get_results(conn)?
        });
    diesel::delete(directory::table.filter(directory::email.eq_any(&emails))).execute(conn)?;
    Ok(emails.len())
}

/// A user by e-mail, locked (the CLI's removal: admins have no tenant).
pub fn user_by_email_for_update(
    conn: &mut PgConnection,
    email: &str,
) -> QueryResult<Option<UserRow>> {
    match owner_of_email(conn, email)? {
        Some(owner) => user_of(conn, owner, email, true),
        None => Ok(None),
    }
}

pub fn set_password(
    conn: &mut PgConnection,
    owner: Owner,
    user: Uuid,
    hash: &str,
) -> QueryResult<usize> {
    by_owner!(owner, console_users | platform_console_users, |t, rows| {
        diesel::update(rows.filter(t::id.eq(user)))
            .set(t::password_hash.eq(hash))
            .execute(conn)
    })
}

/// One tenant's share of the queue (the admin queue page).
#[derive(Debug, QueryableByName, serde::Serialize)]
pub struct Backlog {
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = BigInt)]
    pub queued: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub oldest_due: Option<DateTime<Utc>>,
}

/// The 50 tenants with the most queued messages (one aggregate over
/// `email_queue`, which holds only messages with work left).
pub fn backlog(conn: &mut PgConnection) -> QueryResult<Vec<Backlog>> {
    diesel::sql_query(
        "SELECT q.tenant_id, t.name, q.queued, q.oldest_due FROM \
           (SELECT tenant_id, count(*) AS queued, min(next_attempt_at) AS oldest_due \
            FROM email_queue GROUP BY tenant_id ORDER BY count(*) DESC LIMIT 50) q \
         JOIN tenants t ON t.id = q.tenant_id ORDER BY q.queued DESC, q.tenant_id",
    )
    .load(conn)
}

#[derive(Debug, QueryableByName)]
struct Oldest {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    at: Option<DateTime<Utc>>,
}

/// The earliest `next_attempt_at` of a message waiting to be claimed.
pub fn oldest_due(conn: &mut PgConnection) -> QueryResult<Option<DateTime<Utc>>> {
    let row: Oldest = diesel::sql_query(
        "SELECT min(next_attempt_at) AS at FROM email_queue WHERE lease_until IS NULL AND NOT held",
    )
    .get_result(conn)?;
    Ok(row.at)
}
