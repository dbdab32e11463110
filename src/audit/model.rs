//! `audit_log` rows and the filtered, keyset-paginated listing.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::audit_log;

#[derive(Insertable)]
#[diesel(table_name = audit_log)]
pub struct NewEntry<'a> {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub actor_kind: &'a str,
    pub actor_id: Option<String>,
    pub action: &'a str,
    pub target_id: Option<String>,
    pub request_id: Option<String>,
    pub changes: serde_json::Value,
}

impl NewEntry<'_> {
    pub fn insert(&self, conn: &mut PgConnection) -> QueryResult<()> {
        diesel::insert_into(audit_log::table)
            .values(self)
            .execute(conn)
            .map(|_| ())
    }
}

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = audit_log)]
pub struct EntryRow {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_id: Option<String>,
    pub request_id: Option<String>,
    pub changes: serde_json::Value,
}

impl EntryRow {
    pub fn position(&self) -> Cursor {
        Cursor {
            created_at: self.at,
            id: self.id,
        }
    }
}

/// Which entries a listing may see and which it asked for.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// `Some` for a tenant key (its own tenant only) or an admin's
    /// `tenant_id` filter.
    pub tenant_id: Option<Uuid>,
    pub actor_kind: Option<String>,
    pub actor_id: Option<String>,
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Newest first; with a tenant the `audit_log_tenant` index serves it,
/// else `audit_log_listing`.
pub fn list(conn: &mut PgConnection, f: &Filter, page: PageRequest) -> QueryResult<Vec<EntryRow>> {
    let mut q = audit_log::table
        .select(EntryRow::as_select())
        .order((audit_log::at.desc(), audit_log::id.desc()))
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(t) = f.tenant_id {
        q = q.filter(audit_log::tenant_id.eq(t));
    }
    if let Some(k) = &f.actor_kind {
        q = q.filter(audit_log::actor_kind.eq(k.clone()));
    }
    if let Some(id) = &f.actor_id {
        q = q.filter(audit_log::actor_id.eq(id.clone()));
    }
    if let Some(a) = &f.action {
        q = q.filter(audit_log::action.eq(a.clone()));
    }
    if let Some(from) = f.from {
        q = q.filter(audit_log::at.ge(from));
    }
    if let Some(to) = f.to {
        q = q.filter(audit_log::at.lt(to));
    }
    if let Some(c) = page.after {
        q = q.filter(
            audit_log::at
                .lt(c.created_at)
                .or(audit_log::at.eq(c.created_at).and(audit_log::id.lt(c.id))),
        );
    }
    q.load(conn)
}
