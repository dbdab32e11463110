//! Retention (issue 11, finding 9): message content — bodies, headers,
//! attachments — is purged `retention.content_days` after the message was
//! accepted (a tenant's `retention_content_days` overrides it); the message
//! row itself (status, addresses, subject, tags) and its events go after
//! `retention.metadata_days`. Only finished messages (delivered, bounced,
//! failed, canceled) are touched: mail still queued keeps what it needs.
//! This is the only statement that deletes messages: it deletes their
//! `email_recipients` and `email_queue` rows itself, in the same statement,
//! as those have no foreign key to `emails` (issue 24: none checked per
//! row at ingest); events go by their foreign key's cascade.
//!
//! Every statement handles at most `retention.batch_rows` rows (short locks,
//! bounded WAL per transaction) and skips rows another transaction holds; a
//! run stops after `retention.max_batches` statements of each kind, so one
//! maintenance tick is bounded too and the rest waits for the next.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};

use crate::config::RetentionSettings;

/// Terminal statuses: nothing will read the content to send it again.
const FINISHED: &str = "('delivered', 'bounced', 'failed', 'canceled')";

/// What one call removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Messages whose content was purged (`content_purged_at` set).
    pub content: usize,
    /// Messages deleted with their events (past `metadata_days`).
    pub messages: usize,
}

impl PurgeCounts {
    fn add(&mut self, other: PurgeCounts) {
        self.content += other.content;
        self.messages += other.messages;
    }
}

fn batch_rows(settings: &RetentionSettings) -> i64 {
    i64::try_from(settings.batch_rows).unwrap_or(1000)
}

/// One bounded statement of each kind: at most `batch_rows` messages lose
/// their content, at most `batch_rows` expired messages are deleted.
pub fn purge_batch(
    conn: &mut PgConnection,
    settings: &RetentionSettings,
) -> QueryResult<PurgeCounts> {
    let limit = batch_rows(settings);
    let default_days = i32::try_from(settings.content_days).unwrap_or(i32::MAX);
    // The per-row cutoff depends on the tenant; the outer bound (the
    // shortest retention of any tenant) lets the partial index stop early.
    let content = diesel::sql_query(format!(
        "WITH due AS ( \
           SELECT e.tenant_id, e.id FROM emails e JOIN tenants t ON t.id = e.tenant_id \
           WHERE e.content_purged_at IS NULL AND e.status IN {FINISHED} \
             AND e.created_at < now() - make_interval(days => \
                   (SELECT LEAST($1, COALESCE(MIN(retention_content_days), $1)) FROM tenants)) \
             AND e.created_at < now() - make_interval(days => COALESCE(t.retention_content_days, $1)) \
           ORDER BY e.created_at LIMIT $2 \
           FOR UPDATE OF e SKIP LOCKED) \
         UPDATE emails e SET text_body = NULL, html_body = NULL, raw_message = NULL, \
             headers = '{{}}'::jsonb, attachments = '[]'::jsonb, content_purged_at = now() \
         FROM due WHERE e.tenant_id = due.tenant_id AND e.id = due.id"
    ))
    .bind::<Integer, _>(default_days)
    .bind::<BigInt, _>(limit)
    .execute(conn)?;
    let metadata_days = i32::try_from(settings.metadata_days).unwrap_or(i32::MAX);
    let messages = diesel::sql_query(format!(
        "WITH due AS ( \
           SELECT tenant_id, id FROM emails \
           WHERE created_at < now() - make_interval(days => $1) AND status IN {FINISHED} \
           ORDER BY created_at LIMIT $2 \
           FOR UPDATE SKIP LOCKED), \
         recipients AS (DELETE FROM email_recipients r USING due \
           WHERE r.tenant_id = due.tenant_id AND r.email_id = due.id), \
         queued AS (DELETE FROM email_queue q USING due \
           WHERE q.tenant_id = due.tenant_id AND q.email_id = due.id), \
         events AS (DELETE FROM email_events ev USING due \
           WHERE ev.tenant_id = due.tenant_id AND ev.email_id = due.id) \
         DELETE FROM emails e USING due WHERE e.tenant_id = due.tenant_id AND e.id = due.id"
    ))
    .bind::<Integer, _>(metadata_days)
    .bind::<BigInt, _>(limit)
    .execute(conn)?;
    // Received mail (issue 28) by the same rules.
    let (inbound_content, inbound_rows) =
        crate::inbound::model::purge_batch(conn, default_days, metadata_days, limit)?;
    Ok(PurgeCounts {
        content: content + inbound_content,
        messages: messages + inbound_rows,
    })
}

/// Batches until one comes back short or `max_batches` ran: the call of the
/// worker's maintenance tick. Each batch is its own statement (autocommit),
/// so a long purge never holds one big transaction.
pub fn purge(conn: &mut PgConnection, settings: &RetentionSettings) -> QueryResult<PurgeCounts> {
    let mut total = PurgeCounts::default();
    for _ in 0..settings.max_batches {
        let batch = purge_batch(conn, settings)?;
        total.add(batch);
        if batch.content < settings.batch_rows && batch.messages < settings.batch_rows {
            break;
        }
    }
    if total != PurgeCounts::default() {
        tracing::info!(
            content_purged = total.content,
            messages_deleted = total.messages,
            "retention purge"
        );
    }
    Ok(total)
}
