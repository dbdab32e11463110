//! `webhooks` rows and their queries. Every query takes the [`Owner`]: a
//! tenant's endpoints are found only with that tenant, platform endpoints
//! (`tenant_id IS NULL`) only on the admin routes.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::webhooks;
use crate::domain::TenantId;

/// Whose endpoints: one tenant's, or the platform-wide ones of admins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Tenant(TenantId),
    Platform,
}

impl Owner {
    pub fn tenant_id(self) -> Option<uuid::Uuid> {
        match self {
            Owner::Tenant(t) => Some(t.0),
            Owner::Platform => None,
        }
    }
}

#[derive(Clone, Debug, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = webhooks, treat_none_as_null = true)]
pub struct WebhookRow {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub secret_enc: Vec<u8>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookRow {
    pub fn position(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

type Boxed<'a> = webhooks::BoxedQuery<'a, diesel::pg::Pg, webhooks::SqlType>;

fn owned<'a>(owner: Owner) -> Boxed<'a> {
    match owner {
        Owner::Tenant(t) => webhooks::table
            .filter(webhooks::tenant_id.eq(t.0))
            .into_boxed(),
        Owner::Platform => webhooks::table
            .filter(webhooks::tenant_id.is_null())
            .into_boxed(),
    }
}

/// The number of endpoints `tenant` has, with its tenant row locked until
/// the transaction ends, so concurrent creates of one tenant count one after
/// the other (the per-tenant cap holds) while other tenants do not wait.
pub fn count_locked(conn: &mut PgConnection, tenant: TenantId) -> QueryResult<i64> {
    use crate::db::schema::tenants;
    tenants::table
        .filter(tenants::id.eq(tenant.0))
        .select(tenants::id)
        .for_update()
        .load::<Uuid>(conn)?;
    webhooks::table
        .filter(webhooks::tenant_id.eq(tenant.0))
        .count()
        .get_result(conn)
}

pub fn insert(conn: &mut PgConnection, row: &WebhookRow) -> QueryResult<WebhookRow> {
    diesel::insert_into(webhooks::table)
        .values(row)
        .returning(WebhookRow::as_returning())
        .get_result(conn)
}

/// The owner's endpoint; `lock` takes a row lock for an update.
pub fn find(
    conn: &mut PgConnection,
    owner: Owner,
    id: Uuid,
    lock: bool,
) -> QueryResult<Option<WebhookRow>> {
    let one = webhooks::table
        .filter(webhooks::id.eq(id))
        .select(WebhookRow::as_select());
    // Locking clauses cannot be boxed, hence the spelled-out queries.
    match (owner, lock) {
        (Owner::Tenant(t), false) => one.filter(webhooks::tenant_id.eq(t.0)).first(conn),
        (Owner::Tenant(t), true) => one
            .filter(webhooks::tenant_id.eq(t.0))
            .for_update()
            .first(conn),
        (Owner::Platform, false) => one.filter(webhooks::tenant_id.is_null()).first(conn),
        (Owner::Platform, true) => one
            .filter(webhooks::tenant_id.is_null())
            .for_update()
            .first(conn),
    }
    .optional()
}

pub fn list(
    conn: &mut PgConnection,
    owner: Owner,
    page: PageRequest,
) -> QueryResult<Vec<WebhookRow>> {
    let mut q = owned(owner)
        .select(WebhookRow::as_select())
        .order((webhooks::created_at.desc(), webhooks::id.desc()))
        .limit(page.limit + 1);
    if let Some(c) = page.after {
        q = q.filter(
            webhooks::created_at
                .lt(c.created_at)
                .or(webhooks::created_at
                    .eq(c.created_at)
                    .and(webhooks::id.lt(c.id))),
        );
    }
    q.load(conn)
}

/// Writes the row back (computed by the service from a locked read).
pub fn save(conn: &mut PgConnection, row: &mut WebhookRow) -> QueryResult<WebhookRow> {
    row.updated_at = Utc::now();
    diesel::update(webhooks::table.find(row.id))
        .set(&*row)
        .returning(WebhookRow::as_returning())
        .get_result(conn)
}

/// Deletes the owner's endpoint (its deliveries go with it).
pub fn delete(conn: &mut PgConnection, owner: Owner, id: Uuid) -> QueryResult<usize> {
    let one = webhooks::table.filter(webhooks::id.eq(id));
    match owner {
        Owner::Tenant(t) => diesel::delete(one.filter(webhooks::tenant_id.eq(t.0))).execute(conn),
        Owner::Platform => diesel::delete(one.filter(webhooks::tenant_id.is_null())).execute(conn),
    }
}

/// Turns endpoints off (the dispatcher, after a 410 Gone).
pub fn disable(conn: &mut PgConnection, ids: &[Uuid], reason: &str) -> QueryResult<usize> {
    diesel::update(
        webhooks::table
            .filter(webhooks::id.eq_any(ids))
            .filter(webhooks::enabled.eq(true)),
    )
    .set((
        webhooks::enabled.eq(false),
        webhooks::disabled_reason.eq(reason),
        webhooks::updated_at.eq(Utc::now()),
    ))
    .execute(conn)
}
