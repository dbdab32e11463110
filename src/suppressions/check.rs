//! The check on the send path, in the ingest transaction: every recipient of
//! a new message gets its `email_recipients` row, `suppressed` when the
//! address is on the tenant's live suppression list (one statement for the
//! whole batch). A suppressed recipient is never given to a relay (the worker
//! sends only to pending recipients); a message whose recipients are all
//! suppressed is `suppressed` at once and never queued.

use std::collections::{BTreeMap, HashSet};

use diesel::prelude::*;
use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
use uuid::Uuid;

use crate::bounces::recipients;
use crate::emails::model::{NewEmail, NewEvent};

#[derive(QueryableByName)]
struct Inserted {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    email_id: Uuid,
    #[diesel(sql_type = Text)]
    recipient: String,
    #[diesel(sql_type = Text)]
    status: String,
}

/// What the check found in one batch.
#[derive(Default)]
pub struct Checked {
    /// Messages with no recipient left to send to: not queued.
    pub all_suppressed: HashSet<(Uuid, Uuid)>,
    /// Suppressed recipients per tenant (usage `emails_suppressed`).
    pub per_tenant: BTreeMap<Uuid, i64>,
}

pub fn at_ingest(conn: &mut PgConnection, rows: &[&NewEmail]) -> QueryResult<Checked> {
    let mut checked = Checked::default();
    let all = recipients::of_new(rows);
    let mut pending: HashSet<(Uuid, Uuid)> = HashSet::new();
    let mut suppressed: Vec<Inserted> = Vec::new();
    // A stream-scoped entry (an unsubscribe: `broadcast`) holds back only
    // that stream's mail; an entry without a stream holds back every stream.
    let streams: std::collections::HashMap<(Uuid, Uuid), &str> = rows
        .iter()
        .map(|r| ((r.tenant_id, r.id), r.stream.as_str()))
        .collect();
    // Five binds per row: well below the 65,535 limit per statement.
    for chunk in all.chunks(10_000) {
        let t: Vec<Uuid> = chunk.iter().map(|r| r.0).collect();
        let e: Vec<Uuid> = chunk.iter().map(|r| r.1).collect();
        let a: Vec<&str> = chunk.iter().map(|r| r.2.as_str()).collect();
        let k: Vec<&str> = chunk.iter().map(|r| r.3).collect();
        let st: Vec<&str> = chunk
            .iter()
            .map(|r| streams.get(&(r.0, r.1)).copied().unwrap_or("transactional"))
            .collect();
        let inserted: Vec<Inserted> = crate::db::prepared::query(
            "INSERT INTO email_recipients (tenant_id, email_id, recipient, kind, status) \
             SELECT u.t, u.e, u.a, u.k, CASE WHEN s.email IS NULL THEN 'queued' ELSE 'suppressed' END \
             FROM unnest($1, $2, $3, $4, $5) AS u(t, e, a, k, st) \
             LEFT JOIN suppressions s ON s.tenant_id = u.t AND s.email = u.a \
               AND (s.expires_at IS NULL OR s.expires_at > now()) \
               AND (s.stream IS NULL OR s.stream = u.st) \
             ON CONFLICT DO NOTHING \
             RETURNING tenant_id, email_id, recipient, status",
        )
        .bind::<Array<SqlUuid>, _>(&t)
        .bind::<Array<SqlUuid>, _>(&e)
        .bind::<Array<Text>, _>(&a)
        .bind::<Array<Text>, _>(&k)
        .bind::<Array<Text>, _>(&st)
        .load(conn)?;
        for row in inserted {
            if row.status == "suppressed" {
                suppressed.push(row);
            } else {
                pending.insert((row.tenant_id, row.email_id));
            }
        }
    }
    if suppressed.is_empty() {
        return Ok(checked);
    }
    let now = chrono::Utc::now();
    let mut events = Vec::with_capacity(suppressed.len());
    for s in &suppressed {
        *checked.per_tenant.entry(s.tenant_id).or_default() += 1;
        if !pending.contains(&(s.tenant_id, s.email_id)) {
            checked.all_suppressed.insert((s.tenant_id, s.email_id));
        }
        events.push(NewEvent {
            tenant_id: s.tenant_id,
            email_id: s.email_id,
            kind: "email.suppressed".into(),
            detail: serde_json::json!({"recipient": s.recipient}),
            at: now,
        });
    }
    let (t, e): (Vec<Uuid>, Vec<Uuid>) = checked.all_suppressed.iter().copied().unzip();
    if !t.is_empty() {
        diesel::sql_query(
            "UPDATE emails e SET status = 'suppressed' FROM unnest($1, $2) AS u(t, i) \
             WHERE e.tenant_id = u.t AND e.id = u.i",
        )
        .bind::<Array<SqlUuid>, _>(&t)
        .bind::<Array<SqlUuid>, _>(&e)
        .execute(conn)?;
    }
    for chunk in events.chunks(1000) {
        diesel::insert_into(crate::db::schema::email_events::table)
            .values(chunk)
            .execute(conn)?;
        crate::webhooks::outbox::enqueue(conn, chunk)?;
    }
    Ok(checked)
}
