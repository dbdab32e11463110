//! The console's SQL: users, sessions (by token hash), invitations, and the
//! admin queue overview. Tenant users are always read with their tenant.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::schema::{console_invitations, console_sessions, console_users, tenants};

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = console_users)]
pub struct UserRow {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub email: String,
    pub role: String,
    pub password_hash: Option<String>,
    pub created_at: DateTime<Utc>,
    pub totp_enabled: bool,
}

#[derive(Insertable)]
#[diesel(table_name = console_users)]
pub struct NewUser<'a> {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub email: &'a str,
    pub role: &'a str,
    pub password_hash: Option<&'a str>,
}

pub fn insert_user(conn: &mut PgConnection, u: &NewUser<'_>) -> QueryResult<UserRow> {
    diesel::insert_into(console_users::table)
        .values(u)
        .returning(UserRow::as_returning())
        .get_result(conn)
}

/// A user with its tenant's status (`None` for admins).
pub fn user_by_email(
    conn: &mut PgConnection,
    email: &str,
) -> QueryResult<Option<(UserRow, Option<String>)>> {
    console_users::table
        .left_join(tenants::table)
        .filter(console_users::email.eq(email))
        .select((UserRow::as_select(), tenants::status.nullable()))
        .first(conn)
        .optional()
}

/// The users of one tenant, oldest first (bounded: a team page).
pub fn users_of_tenant(conn: &mut PgConnection, tenant: Uuid) -> QueryResult<Vec<UserRow>> {
    console_users::table
        .filter(console_users::tenant_id.eq(tenant))
        .order((console_users::created_at, console_users::id))
        .limit(200)
        .select(UserRow::as_select())
        .load(conn)
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
    console_users::table
        .filter(console_users::tenant_id.eq(tenant))
        .filter(console_users::id.eq(user))
        .select(UserRow::as_select())
        .for_update()
        .first(conn)
        .optional()
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

/// Deletes a user of `tenant`; its sessions and invitations go with it
/// (ON DELETE CASCADE).
pub fn delete_user(conn: &mut PgConnection, tenant: Uuid, user: Uuid) -> QueryResult<usize> {
    diesel::delete(
        console_users::table
            .filter(console_users::tenant_id.eq(tenant))
            .filter(console_users::id.eq(user)),
    )
    .execute(conn)
}

/// A user by e-mail, locked (the CLI's removal: admins have no tenant).
pub fn user_by_email_for_update(
    conn: &mut PgConnection,
    email: &str,
) -> QueryResult<Option<UserRow>> {
    console_users::table
        .filter(console_users::email.eq(email))
        .select(UserRow::as_select())
        .for_update()
        .first(conn)
        .optional()
}

/// Deletes a platform admin user (tenant users: [`delete_user`]).
pub fn delete_admin_user(conn: &mut PgConnection, user: Uuid) -> QueryResult<usize> {
    diesel::delete(
        console_users::table
            .filter(console_users::tenant_id.is_null())
            .filter(console_users::id.eq(user)),
    )
    .execute(conn)
}

pub fn set_password(conn: &mut PgConnection, user: Uuid, hash: &str) -> QueryResult<usize> {
    diesel::update(console_users::table.find(user))
        .set(console_users::password_hash.eq(hash))
        .execute(conn)
}

#[derive(Insertable)]
#[diesel(table_name = console_sessions)]
pub struct NewSession<'a> {
    pub token_hash: &'a [u8],
    pub user_id: Uuid,
    pub csrf_token: &'a str,
    pub expires_at: DateTime<Utc>,
}

pub fn insert_session(conn: &mut PgConnection, s: &NewSession<'_>) -> QueryResult<usize> {
    diesel::insert_into(console_sessions::table)
        .values(s)
        .execute(conn)
}

/// A live session: its user, the CSRF token and the user's tenant status.
pub fn session(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> QueryResult<Option<(UserRow, String, Option<String>)>> {
    console_sessions::table
        .inner_join(console_users::table.left_join(tenants::table))
        .filter(console_sessions::token_hash.eq(token_hash))
        .filter(console_sessions::expires_at.gt(diesel::dsl::now))
        .select((
            UserRow::as_select(),
            console_sessions::csrf_token,
            tenants::status.nullable(),
        ))
        .first(conn)
        .optional()
}

pub fn delete_session(conn: &mut PgConnection, token_hash: &[u8]) -> QueryResult<usize> {
    diesel::delete(console_sessions::table.find(token_hash)).execute(conn)
}

/// "Log out everywhere": every session of the user.
pub fn delete_sessions_of(conn: &mut PgConnection, user: Uuid) -> QueryResult<usize> {
    diesel::delete(console_sessions::table.filter(console_sessions::user_id.eq(user))).execute(conn)
}

/// Expired sessions and used or expired invitations, at most `limit` each.
pub fn purge_expired(conn: &mut PgConnection, limit: i64) -> QueryResult<usize> {
    let sessions = diesel::sql_query(
        "DELETE FROM console_sessions WHERE token_hash IN \
         (SELECT token_hash FROM console_sessions WHERE expires_at < now() LIMIT $1)",
    )
    .bind::<BigInt, _>(limit)
    .execute(conn)?;
    let invitations = diesel::sql_query(
        "DELETE FROM console_invitations WHERE token_hash IN \
         (SELECT token_hash FROM console_invitations \
          WHERE expires_at < now() OR used_at IS NOT NULL LIMIT $1)",
    )
    .bind::<BigInt, _>(limit)
    .execute(conn)?;
    Ok(sessions + invitations)
}

#[derive(Insertable)]
#[diesel(table_name = console_invitations)]
pub struct NewInvitation<'a> {
    pub token_hash: &'a [u8],
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

pub fn insert_invitation(conn: &mut PgConnection, i: &NewInvitation<'_>) -> QueryResult<usize> {
    diesel::insert_into(console_invitations::table)
        .values(i)
        .execute(conn)
}

/// Marks an unused, unexpired invitation used and returns its user: a link
/// works once, whatever races it.
pub fn take_invitation(conn: &mut PgConnection, token_hash: &[u8]) -> QueryResult<Option<Uuid>> {
    diesel::update(
        console_invitations::table
            .filter(console_invitations::token_hash.eq(token_hash))
            .filter(console_invitations::used_at.is_null())
            .filter(console_invitations::expires_at.gt(diesel::dsl::now)),
    )
    .set(console_invitations::used_at.eq(diesel::dsl::now))
    .returning(console_invitations::user_id)
    .get_result(conn)
    .optional()
}

/// Whether an invitation could still be used (the form's GET).
pub fn invitation_open(conn: &mut PgConnection, token_hash: &[u8]) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        console_invitations::table
            .filter(console_invitations::token_hash.eq(token_hash))
            .filter(console_invitations::used_at.is_null())
            .filter(console_invitations::expires_at.gt(diesel::dsl::now)),
    ))
    .get_result(conn)
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
