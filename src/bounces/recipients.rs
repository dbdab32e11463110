//! `email_recipients`: the delivery state of each recipient of a message,
//! keyed `(tenant_id, email_id, recipient)`. Rows are written at ingest
//! (suppressed addresses are recorded `suppressed` there, see
//! `suppressions::check`), by the worker's fenced outcomes
//! (`queue::record`) and by inbound DSNs and complaints (`bounces::apply`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Jsonb, Nullable, Text, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::schema::email_recipients;
use crate::domain::TenantId;
use crate::emails::model::NewEmail;

/// Statuses with work left.
pub const PENDING: [&str; 2] = ["queued", "deferred"];

#[derive(Clone, Debug, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = email_recipients)]
pub struct RecipientRow {
    pub tenant_id: Uuid,
    pub email_id: Uuid,
    pub recipient: String,
    pub kind: String,
    pub status: String,
    pub smtp_response: Option<String>,
    pub bounce: Option<serde_json::Value>,
    pub updated_at: DateTime<Utc>,
    /// First human open / click (issue 29; machine events never set them).
    pub first_opened_at: Option<DateTime<Utc>>,
    pub first_clicked_at: Option<DateTime<Utc>>,
}

/// The bare, lower-cased address of a stored mailbox (`Name <A@b>` → `a@b`).
pub fn bare(mailbox: &str) -> String {
    mailbox
        .parse::<lettre::message::Mailbox>()
        .map(|m| m.email.to_string())
        .unwrap_or_else(|_| mailbox.trim().to_string())
        .to_ascii_lowercase()
}

/// The recipient rows of new messages, one per distinct address (the first
/// kind wins): (tenant, email, address, kind).
pub fn of_new(rows: &[&NewEmail]) -> Vec<(Uuid, Uuid, String, &'static str)> {
    let mut out = Vec::new();
    for r in rows {
        let mut seen = std::collections::HashSet::new();
        let all = r
            .to_addrs
            .iter()
            .map(|a| (a, "to"))
            .chain(r.cc_addrs.iter().map(|a| (a, "cc")))
            .chain(r.bcc_addrs.iter().map(|a| (a, "bcc")));
        for (addr, kind) in all {
            let b = bare(addr);
            if seen.insert(b.clone()) {
                out.push((r.tenant_id, r.id, b, kind));
            }
        }
    }
    out
}

/// A message's distinct recipient addresses in byte order: position `i`
/// is the recipient a return-path token with index `i` names
/// (`bounces::token`). Byte order, not the database's collation, so the
/// worker that makes a token and the listener that reads it agree whatever
/// the locale; the set is fixed at ingest, so positions never move.
pub fn ordered<'a>(addresses: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut all: Vec<&str> = addresses.into_iter().collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The index of `address` among [`ordered`] addresses; `None` when it is
/// not one of them or past what a token holds (a message has at most
/// `emails::input::MAX_RECIPIENTS`).
pub fn index_of(ordered: &[&str], address: &str) -> Option<u8> {
    ordered
        .binary_search(&address)
        .ok()
        .and_then(|i| u8::try_from(i).ok())
}

const _: () = assert!(crate::emails::input::MAX_RECIPIENTS <= 256);

/// A message's recipients, in address order.
pub fn of_email(
    conn: &mut PgConnection,
    tenant: TenantId,
    email: Uuid,
) -> QueryResult<Vec<RecipientRow>> {
    email_recipients::table
        .filter(email_recipients::tenant_id.eq(tenant.0))
        .filter(email_recipients::email_id.eq(email))
        .order(email_recipients::recipient.asc())
        .select(RecipientRow::as_select())
        .load(conn)
}

/// The recipients of many messages (the worker's claim), any status.
pub fn of_emails(conn: &mut PgConnection, keys: &[(Uuid, Uuid)]) -> QueryResult<Vec<RecipientRow>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let t: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let e: Vec<Uuid> = keys.iter().map(|k| k.1).collect();
    diesel::sql_query(
        "SELECT r.* FROM email_recipients r JOIN unnest($1, $2) AS u(t, e) \
           ON r.tenant_id = u.t AND r.email_id = u.e ORDER BY r.tenant_id, r.email_id, r.recipient",
    )
    .bind::<Array<SqlUuid>, _>(&t)
    .bind::<Array<SqlUuid>, _>(&e)
    .load(conn)
}

/// One recipient's new state.
#[derive(Clone, Debug)]
pub struct Update {
    pub recipient: String,
    pub status: &'static str,
    pub smtp_response: Option<String>,
    pub bounce: Option<serde_json::Value>,
}

/// Applies updates of one or many messages: `(tenant, email, update)`.
/// Terminal states stay: a delivered, bounced, complained or suppressed
/// recipient is only ever changed by [`set_reported`].
pub fn apply(conn: &mut PgConnection, updates: &[(Uuid, Uuid, &Update)]) -> QueryResult<usize> {
    if updates.is_empty() {
        return Ok(0);
    }
    let t: Vec<Uuid> = updates.iter().map(|u| u.0).collect();
    let e: Vec<Uuid> = updates.iter().map(|u| u.1).collect();
    let r: Vec<&str> = updates.iter().map(|u| u.2.recipient.as_str()).collect();
    let s: Vec<&str> = updates.iter().map(|u| u.2.status).collect();
    let resp: Vec<Option<&str>> = updates
        .iter()
        .map(|u| u.2.smtp_response.as_deref())
        .collect();
    let b: Vec<Option<&serde_json::Value>> = updates.iter().map(|u| u.2.bounce.as_ref()).collect();
    diesel::sql_query(
        "UPDATE email_recipients r SET status = u.s, smtp_response = COALESCE(u.resp, r.smtp_response), \
           bounce = COALESCE(u.b, r.bounce), updated_at = now() \
         FROM unnest($1, $2, $3, $4, $5, $6) AS u(t, e, rcpt, s, resp, b) \
         WHERE r.tenant_id = u.t AND r.email_id = u.e AND r.recipient = u.rcpt \
           AND r.status IN ('queued', 'deferred')",
    )
    .bind::<Array<SqlUuid>, _>(&t)
    .bind::<Array<SqlUuid>, _>(&e)
    .bind::<Array<Text>, _>(&r)
    .bind::<Array<Text>, _>(&s)
    .bind::<Array<Nullable<Text>>, _>(&resp)
    .bind::<Array<Nullable<Jsonb>>, _>(&b)
    .execute(conn)
}

/// A message failed as a whole: its recipients with work left fail with it.
pub fn fail_pending(conn: &mut PgConnection, keys: &[(Uuid, Uuid)]) -> QueryResult<usize> {
    if keys.is_empty() {
        return Ok(0);
    }
    let t: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let e: Vec<Uuid> = keys.iter().map(|k| k.1).collect();
    diesel::sql_query(
        "UPDATE email_recipients r SET status = 'failed', updated_at = now() \
         FROM unnest($1, $2) AS u(t, e) \
         WHERE r.tenant_id = u.t AND r.email_id = u.e AND r.status IN ('queued', 'deferred')",
    )
    .bind::<Array<SqlUuid>, _>(&t)
    .bind::<Array<SqlUuid>, _>(&e)
    .execute(conn)
}

/// An asynchronous report about one recipient (DSN after delivery, or a
/// complaint), `status` being `bounced` or `complained`. Applied at most
/// once: a recipient already `complained` takes no further report, one
/// already `bounced` no further bounce. True when the row changed; a report
/// that changes nothing must change nothing else either (`bounces::apply`).
pub fn set_reported(
    conn: &mut PgConnection,
    tenant: Uuid,
    email: Uuid,
    recipient: &str,
    status: &str,
    bounce: Option<&serde_json::Value>,
) -> QueryResult<bool> {
    let target = diesel::update(
        email_recipients::table
            .filter(email_recipients::tenant_id.eq(tenant))
            .filter(email_recipients::email_id.eq(email))
            .filter(email_recipients::recipient.eq(recipient))
            .filter(diesel::dsl::not(
                email_recipients::status.eq_any(["complained", status]),
            )),
    );
    let now = email_recipients::updated_at.eq(diesel::dsl::now);
    let n = match bounce {
        Some(b) => target
            .set((
                email_recipients::status.eq(status),
                email_recipients::bounce.eq(b),
                now,
            ))
            .execute(conn)?,
        None => target
            .set((email_recipients::status.eq(status), now))
            .execute(conn)?,
    };
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte order, whatever order the rows come in; duplicates once.
    #[test]
    fn ordered_is_byte_order_and_index_of_finds_positions() {
        let a = ordered(["b@x.test", "B@x.test", "a@x.test", "b@x.test", "_@x.test"]);
        assert_eq!(a, ["B@x.test", "_@x.test", "a@x.test", "b@x.test"]);
        assert_eq!(index_of(&a, "a@x.test"), Some(2));
        assert_eq!(index_of(&a, "c@x.test"), None);
        let many: Vec<String> = (0..300).map(|i| format!("u{i:03}@x.test")).collect();
        let many = ordered(many.iter().map(String::as_str));
        assert_eq!(index_of(&many, "u255@x.test"), Some(255));
        assert_eq!(
            index_of(&many, "u256@x.test"),
            None,
            "past what a token holds"
        );
    }
}
