//! `templates` rows and their queries; every query takes the tenant.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::templates;
use crate::domain::TenantId;

#[derive(Clone, Debug, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = templates, treat_none_as_null = true)]
pub struct TemplateRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub name: String,
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new row has every column; the alias keeps call sites readable.
pub type NewTemplate = TemplateRow;

impl TemplateRow {
    pub fn position(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// How a path or a send body names a template: its uuid or its name.
#[derive(Clone, Debug)]
pub enum TemplateRef {
    Id(Uuid),
    Name(String),
}

impl TemplateRef {
    pub fn parse(raw: &str) -> TemplateRef {
        match Uuid::parse_str(raw) {
            Ok(id) => TemplateRef::Id(id),
            Err(_) => TemplateRef::Name(raw.to_string()),
        }
    }

    /// A name no row can have (it contains NUL).
    fn is_impossible(&self) -> bool {
        matches!(self, TemplateRef::Name(n) if n.contains('\0'))
    }
}

/// The tenant's template by id or name; `lock` takes a row lock for an update.
pub fn find(
    conn: &mut PgConnection,
    tenant: TenantId,
    r: &TemplateRef,
    lock: bool,
) -> QueryResult<Option<TemplateRow>> {
    // Postgres text cannot hold NUL, so no template has such a name; asking
    // would fail the query (a 500, found by the input drill).
    if r.is_impossible() {
        return Ok(None);
    }
    let base = templates::table
        .filter(templates::tenant_id.eq(tenant.0))
        .select(TemplateRow::as_select());
    match (r, lock) {
        (TemplateRef::Id(id), false) => base.filter(templates::id.eq(*id)).first(conn),
        (TemplateRef::Id(id), true) => base.filter(templates::id.eq(*id)).for_update().first(conn),
        (TemplateRef::Name(n), false) => base.filter(templates::name.eq(n)).first(conn),
        (TemplateRef::Name(n), true) => base.filter(templates::name.eq(n)).for_update().first(conn),
    }
    .optional()
}

pub fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    page: PageRequest,
) -> QueryResult<Vec<TemplateRow>> {
    let mut q = templates::table
        .filter(templates::tenant_id.eq(tenant.0))
        .select(TemplateRow::as_select())
        .order((templates::created_at.desc(), templates::id.desc()))
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(c) = page.after {
        q = q.filter(
            templates::created_at
                .lt(c.created_at)
                .or(templates::created_at
                    .eq(c.created_at)
                    .and(templates::id.lt(c.id))),
        );
    }
    q.load(conn)
}

pub fn insert(conn: &mut PgConnection, rows: &[NewTemplate]) -> QueryResult<Vec<TemplateRow>> {
    diesel::insert_into(templates::table)
        .values(rows)
        .returning(TemplateRow::as_returning())
        .get_results(conn)
}

/// A template to copy into tenants (a starter).
pub struct NewStarter<'a> {
    pub name: &'a str,
    pub subject: &'a str,
    pub html: &'a str,
    pub text: &'a str,
}

/// Inserts `t` into every live tenant (or only `tenant`) that has no template
/// of its name; returns how many tenants got it.
pub fn insert_where_missing(
    conn: &mut PgConnection,
    t: &NewStarter<'_>,
    tenant: Option<TenantId>,
) -> QueryResult<usize> {
    use diesel::sql_types::{Nullable, Text, Uuid as SqlUuid};
    diesel::sql_query(
        "INSERT INTO templates (tenant_id, id, name, subject, html, text) \
         SELECT t.id, gen_random_uuid(), $1, $2, $3, $4 FROM tenants t \
         WHERE t.status <> 'deleted' AND ($5::uuid IS NULL OR t.id = $5) \
         ON CONFLICT (tenant_id, name) DO NOTHING",
    )
    .bind::<Text, _>(t.name)
    .bind::<Text, _>(t.subject)
    .bind::<Text, _>(t.html)
    .bind::<Text, _>(t.text)
    .bind::<Nullable<SqlUuid>, _>(tenant.map(|t| t.0))
    .execute(conn)
}

/// Writes the row back (computed by the service from a locked read).
pub fn save(conn: &mut PgConnection, row: &mut TemplateRow) -> QueryResult<TemplateRow> {
    row.updated_at = Utc::now();
    diesel::update(templates::table.find((row.tenant_id, row.id)))
        .set(&*row)
        .returning(TemplateRow::as_returning())
        .get_result(conn)
}

/// Deletes the tenant's template; the row it was.
pub fn delete(
    conn: &mut PgConnection,
    tenant: TenantId,
    r: &TemplateRef,
) -> QueryResult<Option<TemplateRow>> {
    if r.is_impossible() {
        return Ok(None);
    }
    let scoped = templates::table.filter(templates::tenant_id.eq(tenant.0));
    match r {
        TemplateRef::Id(id) => diesel::delete(scoped.filter(templates::id.eq(*id)))
            .returning(TemplateRow::as_returning())
            .get_result(conn)
            .optional(),
        TemplateRef::Name(n) => diesel::delete(scoped.filter(templates::name.eq(n)))
            .returning(TemplateRow::as_returning())
            .get_result(conn)
            .optional(),
    }
}
