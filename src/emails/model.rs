//! `emails` and `email_events` rows and the queries of the API side. Every
//! query takes the tenant; the queue's own queries live in `crate::queue`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::db::pagination::{Cursor, PageRequest};
use crate::db::schema::{email_events, email_queue, emails};
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
    /// A message submitted over SMTP, as sent (`emails::raw`); `None` for
    /// API mail, whose MIME the worker builds from the fields.
    pub raw_message: Option<Vec<u8>>,
    /// `queued`, or `scheduled` when `scheduled_at` is set.
    pub status: String,
    /// When a scheduled message may first be sent (its queue row's
    /// `next_attempt_at`).
    pub scheduled_at: Option<DateTime<Utc>>,
    /// `transactional` or `broadcast` (`emails::stream`).
    pub stream: String,
    /// One-click unsubscribe headers asked for (broadcast mail has them anyway).
    pub unsubscribe: bool,
    /// Tracking bits (`crate::tracking::OPENS`, …); 0 = untouched.
    pub track: i16,
}

#[derive(Clone, Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = emails)]
pub struct EmailRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub status: String,
    pub attempts: i32,
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
    /// The SMTP-submitted message as sent (see [`NewEmail::raw_message`]).
    pub raw_message: Option<Vec<u8>>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub stream: String,
    pub unsubscribe: bool,
    pub track: i16,
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
    pub scheduled_at: Option<DateTime<Utc>>,
    pub stream: String,
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

#[derive(QueryableByName)]
struct Present {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
}

/// Which of the messages `keys` still exist, each locked `FOR KEY SHARE`
/// until the caller's transaction ends, so retention (which takes its rows
/// `FOR UPDATE SKIP LOCKED`) cannot delete one before events written for it
/// commit. `email_events` has no foreign key to `emails` (issue 24): a writer
/// that does not otherwise hold the message row in its transaction writes
/// only the events of the messages this returns.
pub fn lock_present(
    conn: &mut PgConnection,
    keys: &[(Uuid, Uuid)],
) -> QueryResult<std::collections::HashSet<(Uuid, Uuid)>> {
    if keys.is_empty() {
        return Ok(Default::default());
    }
    let (t, e): (Vec<Uuid>, Vec<Uuid>) = keys.iter().copied().unzip();
    let rows: Vec<Present> = diesel::sql_query(
        "SELECT m.tenant_id, m.id FROM emails m \
         JOIN (SELECT DISTINCT t, e FROM unnest($1, $2) AS u(t, e)) u \
           ON m.tenant_id = u.t AND m.id = u.e \
         ORDER BY m.tenant_id, m.id FOR KEY SHARE OF m",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(&t)
    .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(&e)
    .load(conn)?;
    Ok(rows.into_iter().map(|r| (r.tenant_id, r.id)).collect())
}

/// The event a new message starts its timeline with: `email.queued`, or
/// `email.scheduled` with the time it waits for.
fn accept_event(e: &NewEmail) -> NewEvent {
    let (kind, detail) = match e.scheduled_at {
        Some(at) => ("email.scheduled", serde_json::json!({ "scheduled_at": at })),
        None => (QUEUED, serde_json::json!({})),
    };
    NewEvent {
        tenant_id: e.tenant_id,
        email_id: e.id,
        kind: kind.into(),
        detail,
        at: e.created_at,
    }
}

/// Inserts messages, their `email.scheduled` events and the webhook
/// deliveries their first event causes (multi-row statements; the caller
/// holds the transaction). `email.queued` is not stored: it is the
/// `emails` row itself, and [`timeline`] shows it from `created_at`
/// (issue 24: one row fewer per message).
pub fn insert_with_events(conn: &mut PgConnection, rows: &[&NewEmail]) -> QueryResult<()> {
    // 65,535 bind parameters per statement: stay well below with chunks.
    for chunk in rows.chunks(1000) {
        super::insert::rows(conn, chunk)?;
        let events: Vec<NewEvent> = chunk.iter().map(|e| accept_event(e)).collect();
        let stored: Vec<&NewEvent> = events.iter().filter(|e| e.kind != QUEUED).collect();
        if !stored.is_empty() {
            diesel::insert_into(email_events::table)
                .values(stored)
                .execute(conn)?;
        }
        // Same transaction: the webhook outbox commits with the messages.
        crate::webhooks::outbox::enqueue(conn, &events)?;
    }
    Ok(())
}

/// The event every message accepted for sending now starts with.
const QUEUED: &str = "email.queued";

/// A message's events as clients see them: the stored ones, led by
/// `email.queued` at `created_at` when the message was accepted for
/// sending since that event stopped being stored (no `email.queued` nor
/// `email.scheduled` row: older messages have theirs stored, scheduled
/// ones keep storing `email.scheduled`).
pub fn timeline(row: &EmailRow, stored: Vec<EventRow>) -> Vec<EventRow> {
    let accepted = stored
        .iter()
        .any(|e| e.kind == QUEUED || e.kind == "email.scheduled");
    if accepted {
        return stored;
    }
    let mut all = Vec::with_capacity(stored.len() + 1);
    all.push(EventRow {
        kind: QUEUED.into(),
        detail: serde_json::json!({}),
        at: row.created_at,
    });
    all.extend(stored);
    all
}

pub fn find(conn: &mut PgConnection, tenant: TenantId, id: Uuid) -> QueryResult<Option<EmailRow>> {
    emails::table
        .find((tenant.0, id))
        .select(EmailRow::as_select())
        .first(conn)
        .optional()
}

/// Whether the message exists (the inbound listener's RCPT check).
pub fn exists(conn: &mut PgConnection, tenant: TenantId, id: Uuid) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(emails::table.find((tenant.0, id)))).get_result(conn)
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
    /// A bare, lower-cased address: messages with that recipient.
    pub recipient: Option<String>,
    /// Only this stream's messages.
    pub stream: Option<&'static str>,
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
    // `sending` is not stored on the message: it is a queue row under lease.
    let leased = diesel::dsl::exists(
        email_queue::table
            .filter(email_queue::tenant_id.eq(emails::tenant_id))
            .filter(email_queue::email_id.eq(emails::id))
            .filter(email_queue::lease_until.gt(diesel::dsl::now)),
    );
    // A stored `scheduled` whose time has come reads as `queued`
    // (`view::shown_status`).
    let due = emails::scheduled_at.assume_not_null().le(diesel::dsl::now);
    match filter.status.as_deref() {
        Some("sending") => {
            q = q
                .filter(emails::status.eq_any(["queued", "deferred", "scheduled"]))
                .filter(leased)
        }
        Some("queued") => {
            q = q
                .filter(
                    emails::status
                        .eq("queued")
                        .or(emails::status.eq("scheduled").and(due)),
                )
                .filter(diesel::dsl::not(leased))
        }
        Some("scheduled") => {
            q = q
                .filter(emails::status.eq("scheduled"))
                .filter(emails::scheduled_at.assume_not_null().gt(diesel::dsl::now))
                .filter(diesel::dsl::not(leased))
        }
        Some(s @ "deferred") => {
            q = q
                .filter(emails::status.eq(s.to_string()))
                .filter(diesel::dsl::not(leased))
        }
        Some(s) => q = q.filter(emails::status.eq(s.to_string())),
        None => {}
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
    if let Some(s) = filter.stream {
        q = q.filter(emails::stream.eq(s));
    }
    if let Some(r) = &filter.recipient {
        use crate::db::schema::email_recipients as er;
        q = q.filter(diesel::dsl::exists(
            er::table
                .filter(er::tenant_id.eq(emails::tenant_id))
                .filter(er::email_id.eq(emails::id))
                .filter(er::recipient.eq(r.clone())),
        ));
    }
    if let Some(c) = page.after {
        q = q.filter(
            emails::created_at
                .lt(c.created_at)
                .or(emails::created_at.eq(c.created_at).and(emails::id.lt(c.id))),
        );
    }
    let mut rows: Vec<EmailSummaryRow> = q.load(conn)?;
    let pending: Vec<(Uuid, Uuid)> = rows
        .iter()
        .filter(|r| matches!(r.status.as_str(), "queued" | "deferred" | "scheduled"))
        .map(|r| (r.tenant_id, r.id))
        .collect();
    let leased = crate::queue::model::leased(conn, &pending)?;
    for r in rows.iter_mut() {
        if leased.contains(&(r.tenant_id, r.id)) {
            r.status = "sending".into();
        }
    }
    Ok(rows)
}

/// Cancels a tenant's unsent mail (tenant deletion): it leaves the queue
/// (mail in flight finishes); records the event.
pub fn cancel_pending_of_tenant(conn: &mut PgConnection, tenant: TenantId) -> QueryResult<usize> {
    let pending = crate::queue::model::remove_pending_of_tenant(conn, tenant)?;
    let ids: Vec<Uuid> = diesel::update(
        emails::table
            .filter(emails::tenant_id.eq(tenant.0))
            .filter(emails::id.eq_any(&pending)),
    )
    .set(emails::status.eq("canceled"))
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
