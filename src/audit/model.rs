//! Audit entries and the filtered, keyset-paginated listing. A tenant's
//! entries are written to `tenant_audit_log` (keyed `(tenant_id, id)`),
//! the platform's (admin and CLI actions on no tenant) to
//! `platform_audit_log` (a reference table); `audit_log` is the view of
//! both that the listing reads.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::{audit_log, platform_audit_log, tenant_audit_log};

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
        match self.tenant_id {
            Some(t) => {
                use tenant_audit_log as a;
                diesel::insert_into(a::table)
                    .values((
                        a::id.eq(self.id),
                        a::tenant_id.eq(t),
                        a::actor_kind.eq(self.actor_kind),
                        a::actor_id.eq(&self.actor_id),
                        a::action.eq(self.action),
                        a::target_id.eq(&self.target_id),
                        a::request_id.eq(&self.request_id),
                        a::changes.eq(&self.changes),
                    ))
                    .execute(conn)
            }
            None => {
                use platform_audit_log as a;
                diesel::insert_into(a::table)
                    .values((
                        a::id.eq(self.id),
                        a::actor_kind.eq(self.actor_kind),
                        a::actor_id.eq(&self.actor_id),
                        a::action.eq(self.action),
                        a::target_id.eq(&self.target_id),
                        a::request_id.eq(&self.request_id),
                        a::changes.eq(&self.changes),
                    ))
                    .execute(conn)
            }
        }
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

/// Newest first, from the `audit_log` view; with a tenant the condition
/// reaches `tenant_audit_log` alone (the platform branch has no tenant),
/// served by `audit_log_tenant`, else both tables' `(at, id)` indexes.
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
