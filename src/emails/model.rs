//! `emails` and `email_events` rows and the queries of the API side. Every
//! query takes the tenant; the queue's own queries live in `crate::queue`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::{email_events, emails};
use crate::domain::TenantId;

#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = emails)]
pub struct NewEmail {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub message_id: String,
    pub from_addr: String,
    pub envelope_from: String,
    pub to_addrs: Vec<String>,
    pub cc_addrs: Vec<String>,
    pub bcc_addrs: Vec<String>,
    pub reply_to: Vec<String>,
    pub subject: String,
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    pub headers: serde_json::Value,
    pub attachments: serde_json::Value,
    pub tags: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = emails)]
pub struct EmailRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub smtp_response: Option<String>,
    pub message_id: String,
    pub from_addr: String,
    pub envelope_from: String,
    pub to_addrs: Vec<String>,
    pub cc_addrs: Vec<String>,
    pub bcc_addrs: Vec<String>,
    pub reply_to: Vec<String>,
    pub subject: String,
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    pub headers: serde_json::Value,
    pub attachments: serde_json::Value,
    pub tags: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Set when retention purged bodies, headers and attachments.
    pub content_purged_at: Option<DateTime<Utc>>,
}

/// The columns a listing shows (no bodies or attachments).
#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = emails)]
pub struct EmailSummaryRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub status: String,
    pub attempts: i32,
    pub from_addr: String,
    pub to_addrs: Vec<String>,
    pub subject: String,
    pub tags: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl EmailSummaryRow {
    pub fn position(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = email_events)]
pub struct NewEvent {
    pub tenant_id: Uuid,
    pub email_id: Uuid,
    pub kind: String,
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = email_events)]
pub struct EventRow {
    pub kind: String,
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// Inserts messages, their `email.queued` events and the webhook deliveries
/// those cause (multi-row statements; the caller holds the transaction).
pub fn insert_with_events(conn: &mut PgConnection, rows: &[&NewEmail]) -> QueryResult<()> {
    // 65,535 bind parameters per statement: stay well below with chunks.
    for chunk in rows.chunks(1000) {
        diesel::insert_into(emails::table)
            .values(chunk.to_vec())
            .execute(conn)?;
        let events: Vec<NewEvent> = chunk
            .iter()
            .map(|e| NewEvent {
                tenant_id: e.tenant_id,
                email_id: e.id,
                kind: "email.queued".into(),
                detail: serde_json::json!({}),
                at: e.created_at,
            })
            .collect();
        diesel::insert_into(email_events::table)
            .values(&events)
            .execute(conn)?;
        // Same transaction: the webhook outbox commits with the messages.
        crate::webhooks::outbox::enqueue(conn, &events)?;
    }
    Ok(())
}

pub fn find(conn: &mut PgConnection, tenant: TenantId, id: Uuid) -> QueryResult<Option<EmailRow>> {
    emails::table
        .find((tenant.0, id))
        .select(EmailRow::as_select())
        .first(conn)
        .optional()
}

pub fn events(conn: &mut PgConnection, tenant: TenantId, id: Uuid) -> QueryResult<Vec<EventRow>> {
    email_events::table
        .filter(email_events::tenant_id.eq(tenant.0))
        .filter(email_events::email_id.eq(id))
        .order(email_events::seq.asc())
        .select(EventRow::as_select())
        .load(conn)
}

/// Listing filters, already validated.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub tenant: Option<TenantId>,
    pub status: Option<String>,
    /// `(name, Some(value))` matches a tag value; `(name, None)` any value.
    pub tag: Option<(String, Option<String>)>,
}

pub fn list(
    conn: &mut PgConnection,
    filter: &ListFilter,
    page: PageRequest,
) -> QueryResult<Vec<EmailSummaryRow>> {
    let mut q = emails::table
        .select(EmailSummaryRow::as_select())
        .order((emails::created_at.desc(), emails::id.desc()))
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(t) = filter.tenant {
        q = q.filter(emails::tenant_id.eq(t.0));
    }
    if let Some(s) = &filter.status {
        q = q.filter(emails::status.eq(s.clone()));
    }
    match &filter.tag {
        Some((k, Some(v))) => {
            let mut m = serde_json::Map::new();
            m.insert(k.clone(), serde_json::Value::String(v.clone()));
            q = q.filter(emails::tags.contains(serde_json::Value::Object(m)));
        }
        Some((k, None)) => q = q.filter(emails::tags.has_key(k.clone())),
        None => {}
    }
    if let Some(c) = page.after {
        q = q.filter(
            emails::created_at
                .lt(c.created_at)
                .or(emails::created_at.eq(c.created_at).and(emails::id.lt(c.id))),
        );
    }
    q.load(conn)
}

/// Cancels a tenant's unsent mail (tenant deletion); records the event.
pub fn cancel_pending_of_tenant(conn: &mut PgConnection, tenant: TenantId) -> QueryResult<usize> {
    let ids: Vec<Uuid> = diesel::update(
        emails::table
            .filter(emails::tenant_id.eq(tenant.0))
            .filter(emails::status.eq_any(["queued", "deferred"])),
    )
    .set((
        emails::status.eq("canceled"),
        emails::locked_until.eq(None::<DateTime<Utc>>),
    ))
    .returning(emails::id)
    .get_results(conn)?;
    let now = Utc::now();
    let events: Vec<NewEvent> = ids
        .iter()
        .map(|id| NewEvent {
            tenant_id: tenant.0,
            email_id: *id,
            kind: "email.canceled".into(),
            detail: serde_json::json!({"reason": "tenant deleted"}),
            at: now,
        })
        .collect();
    for chunk in events.chunks(1000) {
        diesel::insert_into(email_events::table)
            .values(chunk)
            .execute(conn)?;
    }
    Ok(ids.len())
}

/// Messages waiting, by status: only the queue statuses, which the partial
/// indexes cover, so a scrape stays cheap however large the history is.
pub fn queue_depth(conn: &mut PgConnection) -> QueryResult<Vec<(String, i64)>> {
    emails::table
        .filter(emails::status.eq_any(["queued", "deferred", "sending"]))
        .group_by(emails::status)
        .select((emails::status, diesel::dsl::count_star()))
        .load(conn)
}
