//! `inbound_routes` and `inbound_messages` rows and their queries. Every
//! tenant query takes the tenant; the one cross-tenant read is
//! [`route_for`], the listener's: the address decides the tenant.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::{inbound_messages as msgs, inbound_routes as routes};
use crate::domain::TenantId;

#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = routes)]
pub struct RouteRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub match_addr: String,
    pub domain: String,
    pub local_part: Option<String>,
    pub action: String,
    pub webhook_id: Option<Uuid>,
    pub format: String,
    pub created_at: DateTime<Utc>,
}

impl RouteRow {
    pub fn position(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

pub fn insert_route(conn: &mut PgConnection, row: &RouteRow) -> QueryResult<RouteRow> {
    diesel::insert_into(routes::table)
        .values(row)
        .returning(RouteRow::as_returning())
        .get_result(conn)
}

pub fn find_route(conn: &mut PgConnection, t: TenantId, id: Uuid) -> QueryResult<Option<RouteRow>> {
    routes::table
        .filter(routes::tenant_id.eq(t.0).and(routes::id.eq(id)))
        .select(RouteRow::as_select())
        .first(conn)
        .optional()
}

pub fn list_routes(
    conn: &mut PgConnection,
    t: TenantId,
    page: PageRequest,
) -> QueryResult<Vec<RouteRow>> {
    let mut q = routes::table
        .filter(routes::tenant_id.eq(t.0))
        .select(RouteRow::as_select())
        .order((routes::created_at.desc(), routes::id.desc()))
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(c) = page.after {
        q = q.filter(
            routes::created_at
                .lt(c.created_at)
                .or(routes::created_at.eq(c.created_at).and(routes::id.lt(c.id))),
        );
    }
    q.load(conn)
}

pub fn delete_route(conn: &mut PgConnection, t: TenantId, id: Uuid) -> QueryResult<usize> {
    diesel::delete(routes::table.filter(routes::tenant_id.eq(t.0).and(routes::id.eq(id))))
        .execute(conn)
}

/// The route serving `local@domain` (`local` without its `+hash`): an exact
/// address first, then the domain's wildcard; the oldest when two tenants
/// hold the same name; only for active tenants.
pub fn route_for(
    conn: &mut PgConnection,
    local: &str,
    domain: &str,
) -> QueryResult<Option<RouteRow>> {
    use crate::db::schema::tenants;
    routes::table
        .inner_join(tenants::table.on(tenants::id.eq(routes::tenant_id)))
        .filter(tenants::status.eq("active"))
        .filter(routes::domain.eq(domain))
        .filter(
            routes::local_part
                .eq(local)
                .or(routes::local_part.is_null()),
        )
        .select(RouteRow::as_select())
        .order((
            routes::local_part.is_null(),
            routes::created_at.asc(),
            routes::id.asc(),
        ))
        .first(conn)
        .optional()
}

/// The tenant's routes' domains (for the domains' `inbound` MX record).
pub fn route_domains(conn: &mut PgConnection, t: TenantId) -> QueryResult<Vec<String>> {
    routes::table
        .filter(routes::tenant_id.eq(t.0))
        .select(routes::domain)
        .distinct()
        .load(conn)
}

#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = msgs)]
pub struct MessageRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub route_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub mail_from: String,
    pub recipient: String,
    pub from_addr: Option<String>,
    pub to_addrs: Vec<String>,
    pub cc_addrs: Vec<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub in_reply_to_email_id: Option<Uuid>,
    pub mailbox_hash: Option<String>,
    pub content: Option<serde_json::Value>,
    pub size_bytes: i32,
    pub auth: serde_json::Value,
    pub spam: Option<serde_json::Value>,
    pub status: String,
    pub content_purged_at: Option<DateTime<Utc>>,
}

impl MessageRow {
    pub fn position(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Inserts the row with its raw message (borrowed: not copied here).
pub fn insert_message(conn: &mut PgConnection, row: &MessageRow, raw: &[u8]) -> QueryResult<()> {
    diesel::insert_into(msgs::table)
        .values((row, msgs::raw.eq(raw)))
        .execute(conn)
        .map(|_| ())
}

/// The listing's filters, validated.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub route_id: Option<Uuid>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub after: Option<DateTime<Utc>>,
}

pub fn list_messages(
    conn: &mut PgConnection,
    t: TenantId,
    f: &Filter,
    page: PageRequest,
) -> QueryResult<Vec<MessageRow>> {
    let mut q = msgs::table
        .filter(msgs::tenant_id.eq(t.0))
        .select(MessageRow::as_select())
        .order((msgs::created_at.desc(), msgs::id.desc()))
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(r) = f.route_id {
        q = q.filter(msgs::route_id.eq(r));
    }
    if let Some(from) = &f.from {
        q = q.filter(msgs::from_addr.eq(from).or(msgs::mail_from.eq(from)));
    }
    if let Some(to) = &f.to {
        q = q.filter(
            msgs::recipient
                .eq(to)
                .or(msgs::to_addrs.contains(vec![to.clone()])),
        );
    }
    if let Some(a) = f.after {
        q = q.filter(msgs::created_at.gt(a));
    }
    if let Some(c) = page.after {
        q = q.filter(
            msgs::created_at
                .lt(c.created_at)
                .or(msgs::created_at.eq(c.created_at).and(msgs::id.lt(c.id))),
        );
    }
    q.load(conn)
}

pub fn find_message(
    conn: &mut PgConnection,
    t: TenantId,
    id: Uuid,
) -> QueryResult<Option<MessageRow>> {
    msgs::table
        .filter(msgs::tenant_id.eq(t.0).and(msgs::id.eq(id)))
        .select(MessageRow::as_select())
        .first(conn)
        .optional()
}

pub fn raw_of(
    conn: &mut PgConnection,
    t: TenantId,
    id: Uuid,
) -> QueryResult<Option<Option<Vec<u8>>>> {
    msgs::table
        .filter(msgs::tenant_id.eq(t.0).and(msgs::id.eq(id)))
        .select(msgs::raw)
        .first(conn)
        .optional()
}

/// The status a webhook route's message shows: its `email.received`
/// delivery's fate (`delivered`, `failed`, else `pending`).
pub fn delivery_statuses(
    conn: &mut PgConnection,
    t: TenantId,
    ids: &[Uuid],
) -> QueryResult<Vec<(Uuid, String)>> {
    use crate::db::schema::webhook_deliveries as d;
    let rows: Vec<(Option<Uuid>, String)> = d::table
        .filter(d::tenant_id.eq(t.0))
        .filter(d::event_type.eq(super::EVENT))
        .filter(d::email_id.eq_any(ids))
        .select((d::email_id, d::status))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, s)| Some((id?, s)))
        .collect())
}

/// A message this tenant sent, by its `Message-ID` (with angle brackets, as
/// stored), for replies: the first of `ids` that names one.
pub fn sent_by_message_id(
    conn: &mut PgConnection,
    t: TenantId,
    ids: &[String],
) -> QueryResult<Option<Uuid>> {
    use crate::db::schema::emails;
    for mid in ids.iter().take(20) {
        let found: Option<Uuid> = emails::table
            .filter(emails::tenant_id.eq(t.0))
            .filter(emails::message_id.eq(format!("<{mid}>")))
            .select(emails::id)
            .first(conn)
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Retention for received mail (called by `crate::retention::purge_batch`):
/// at most `limit` messages lose their content (parsed and raw) past the
/// tenant's content days, at most `limit` rows go past `metadata_days`.
/// `(content purged, rows deleted)`.
pub fn purge_batch(
    conn: &mut PgConnection,
    content_days: i32,
    metadata_days: i32,
    limit: i64,
) -> QueryResult<(usize, usize)> {
    use diesel::sql_types::{BigInt, Integer};
    let content = diesel::sql_query(
        "WITH due AS ( \
           SELECT m.tenant_id, m.id FROM inbound_messages m JOIN tenants t ON t.id = m.tenant_id \
           WHERE m.content_purged_at IS NULL \
             AND m.created_at < now() - make_interval(days => \
                   (SELECT LEAST($1, COALESCE(MIN(retention_content_days), $1)) FROM tenants)) \
             AND m.created_at < now() - make_interval(days => COALESCE(t.retention_content_days, $1)) \
           ORDER BY m.created_at LIMIT $2 \
           FOR UPDATE OF m SKIP LOCKED) \
         UPDATE inbound_messages m SET content = NULL, raw = NULL, content_purged_at = now() \
         FROM due WHERE m.tenant_id = due.tenant_id AND m.id = due.id",
    )
    .bind::<Integer, _>(content_days)
    .bind::<BigInt, _>(limit)
    .execute(conn)?;
    let rows = diesel::sql_query(
        "WITH due AS ( \
           SELECT tenant_id, id FROM inbound_messages \
           WHERE created_at < now() - make_interval(days => $1) \
           ORDER BY created_at LIMIT $2 \
           FOR UPDATE SKIP LOCKED) \
         DELETE FROM inbound_messages m USING due WHERE m.tenant_id = due.tenant_id AND m.id = due.id",
    )
    .bind::<Integer, _>(metadata_days)
    .bind::<BigInt, _>(limit)
    .execute(conn)?;
    Ok((content, rows))
}
