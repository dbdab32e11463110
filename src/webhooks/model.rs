//! Webhook endpoint rows and their queries. Every query takes the [`Owner`]:
//! a tenant's endpoints (`webhooks`, keyed `(tenant_id, id)`) are found only
//! with that tenant, the platform's (`platform_webhooks`, a reference table)
//! only on the admin routes.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::{platform_webhooks as pw, webhooks};
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

/// An endpoint; `tenant_id` is `None` for a platform endpoint.
#[derive(Clone, Debug, Queryable)]
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

    pub fn owner(&self) -> Owner {
        match self.tenant_id {
            Some(t) => Owner::Tenant(TenantId(t)),
            None => Owner::Platform,
        }
    }
}

/// The columns of a [`WebhookRow`], from either table.
macro_rules! columns {
    (tenant) => {
        (
            webhooks::id,
            webhooks::tenant_id.nullable(),
            webhooks::url,
            webhooks::events,
            webhooks::description,
            webhooks::secret_enc,
            webhooks::enabled,
            webhooks::disabled_reason,
            webhooks::created_at,
            webhooks::updated_at,
        )
    };
    (platform) => {
        (
            pw::id,
            diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::Uuid>>("NULL"),
            pw::url,
            pw::events,
            pw::description,
            pw::secret_enc,
            pw::enabled,
            pw::disabled_reason,
            pw::created_at,
            pw::updated_at,
        )
    };
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
    match row.tenant_id {
        Some(t) => diesel::insert_into(webhooks::table)
            .values((
                webhooks::id.eq(row.id),
                webhooks::tenant_id.eq(t),
                webhooks::url.eq(&row.url),
                webhooks::events.eq(&row.events),
                webhooks::description.eq(&row.description),
                webhooks::secret_enc.eq(&row.secret_enc),
                webhooks::enabled.eq(row.enabled),
                webhooks::disabled_reason.eq(&row.disabled_reason),
                webhooks::created_at.eq(row.created_at),
                webhooks::updated_at.eq(row.updated_at),
            ))
            .returning(columns!(tenant))
            .get_result(conn),
        None => diesel::insert_into(pw::table)
            .values((
                pw::id.eq(row.id),
                pw::url.eq(&row.url),
                pw::events.eq(&row.events),
                pw::description.eq(&row.description),
                pw::secret_enc.eq(&row.secret_enc),
                pw::enabled.eq(row.enabled),
                pw::disabled_reason.eq(&row.disabled_reason),
                pw::created_at.eq(row.created_at),
                pw::updated_at.eq(row.updated_at),
            ))
            .returning(columns!(platform))
            .get_result(conn),
    }
}

/// The owner's endpoint; `lock` takes a row lock for an update.
pub fn find(
    conn: &mut PgConnection,
    owner: Owner,
    id: Uuid,
    lock: bool,
) -> QueryResult<Option<WebhookRow>> {
    // Locking clauses cannot be boxed, hence the spelled-out queries.
    match (owner, lock) {
        (Owner::Tenant(t), lock) => {
            let one = webhooks::table
                .filter(webhooks::tenant_id.eq(t.0))
                .filter(webhooks::id.eq(id))
                .select(columns!(tenant));
            if lock {
                one.for_update().first(conn)
            } else {
                one.first(conn)
            }
        }
        (Owner::Platform, lock) => {
            let one = pw::table.filter(pw::id.eq(id)).select(columns!(platform));
            if lock {
                one.for_update().first(conn)
            } else {
                one.first(conn)
            }
        }
    }
    .optional()
}

pub fn list(
    conn: &mut PgConnection,
    owner: Owner,
    page: PageRequest,
) -> QueryResult<Vec<WebhookRow>> {
    match owner {
        Owner::Tenant(t) => {
            let mut q = webhooks::table
                .filter(webhooks::tenant_id.eq(t.0))
                .select(columns!(tenant))
                .order((webhooks::created_at.desc(), webhooks::id.desc()))
                .limit(page.limit + 1)
                .into_boxed();
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
        Owner::Platform => {
            let mut q = pw::table
                .select(columns!(platform))
                .order((pw::created_at.desc(), pw::id.desc()))
                .limit(page.limit + 1)
                .into_boxed();
            if let Some(c) = page.after {
                q = q.filter(
                    pw::created_at
                        .lt(c.created_at)
                        .or(pw::created_at.eq(c.created_at).and(pw::id.lt(c.id))),
                );
            }
            q.load(conn)
        }
    }
}

/// Writes the row back (computed by the service from a locked read).
pub fn save(conn: &mut PgConnection, row: &mut WebhookRow) -> QueryResult<WebhookRow> {
    row.updated_at = Utc::now();
    match row.tenant_id {
        Some(t) => diesel::update(
            webhooks::table
                .filter(webhooks::tenant_id.eq(t))
                .filter(webhooks::id.eq(row.id)),
        )
        .set((
            webhooks::url.eq(&row.url),
            webhooks::events.eq(&row.events),
            webhooks::description.eq(&row.description),
            webhooks::secret_enc.eq(&row.secret_enc),
            webhooks::enabled.eq(row.enabled),
            webhooks::disabled_reason.eq(&row.disabled_reason),
            webhooks::updated_at.eq(row.updated_at),
        ))
        .returning(columns!(tenant))
        .get_result(conn),
        None => diesel::update(pw::table.filter(pw::id.eq(row.id)))
            .set((
                pw::url.eq(&row.url),
                pw::events.eq(&row.events),
                pw::description.eq(&row.description),
                pw::secret_enc.eq(&row.secret_enc),
                pw::enabled.eq(row.enabled),
                pw::disabled_reason.eq(&row.disabled_reason),
                pw::updated_at.eq(row.updated_at),
            ))
            .returning(columns!(platform))
            .get_result(conn),
    }
}

/// Deletes the owner's endpoint (its deliveries go with it).
pub fn delete(conn: &mut PgConnection, owner: Owner, id: Uuid) -> QueryResult<usize> {
    match owner {
        Owner::Tenant(t) => diesel::delete(
            webhooks::table
                .filter(webhooks::tenant_id.eq(t.0))
                .filter(webhooks::id.eq(id)),
        )
        .execute(conn),
        Owner::Platform => diesel::delete(pw::table.filter(pw::id.eq(id))).execute(conn),
    }
}

/// Turns endpoints off (the dispatcher, after a 410 Gone): each named by
/// its owner and id.
pub fn disable(
    conn: &mut PgConnection,
    hooks: &[(Owner, Uuid)],
    reason: &str,
) -> QueryResult<usize> {
    let mut n = 0;
    for (owner, id) in hooks {
        n += match owner {
            Owner::Tenant(t) => diesel::update(
                webhooks::table
                    .filter(webhooks::tenant_id.eq(t.0))
                    .filter(webhooks::id.eq(id))
                    .filter(webhooks::enabled.eq(true)),
            )
            .set((
                webhooks::enabled.eq(false),
                webhooks::disabled_reason.eq(reason),
                webhooks::updated_at.eq(Utc::now()),
            ))
            .execute(conn)?,
            Owner::Platform => {
                diesel::update(pw::table.filter(pw::id.eq(id)).filter(pw::enabled.eq(true)))
                    .set((
                        pw::enabled.eq(false),
                        pw::disabled_reason.eq(reason),
                        pw::updated_at.eq(Utc::now()),
                    ))
                    .execute(conn)?
            }
        };
    }
    Ok(n)
}
