//! `email_queue`: one narrow row per message with work left (DESIGN §5,
//! issue 10). Enqueue, leases and their heartbeat, the reclaim of expired
//! leases, and holding a suspended tenant's mail. The claim itself is in
//! [`super::claim`], outcomes in [`super::record`].

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Double, Integer, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::prepared;
use crate::domain::TenantId;
use crate::emails::model::NewEmail;

/// The content bytes a message holds in memory while it is being sent,
/// before MIME encoding: what `worker.max_inflight_bytes` counts.
pub fn content_size(e: &NewEmail) -> i32 {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let json = |v: &serde_json::Value| match v {
        serde_json::Value::Null => 0,
        serde_json::Value::String(s) => s.len(),
        other => other.to_string().len(),
    };
    let addrs: usize = [&e.to_addrs, &e.cc_addrs, &e.bcc_addrs, &e.reply_to]
        .iter()
        .flat_map(|v| v.iter())
        .map(String::len)
        .sum();
    let total = e.subject.len()
        + text(&e.text_body)
        + text(&e.html_body)
        + json(&e.headers)
        + json(&e.attachments)
        + e.raw_message.as_ref().map_or(0, Vec::len)
        + addrs;
    i32::try_from(total).unwrap_or(i32::MAX)
}

/// Queue rows for new messages (same transaction as the messages): one
/// statement of one fixed text, prepared once per connection (issue 24).
pub fn insert(conn: &mut PgConnection, rows: &[&NewEmail]) -> QueryResult<()> {
    for chunk in rows.chunks(5000) {
        let col = |f: fn(&NewEmail) -> Uuid| chunk.iter().map(|e| f(e)).collect::<Vec<Uuid>>();
        // A scheduled message waits on the same ready index as the rest:
        // the claim's `next_attempt_at <= now()` keeps it.
        let next: Vec<chrono::DateTime<chrono::Utc>> = chunk
            .iter()
            .map(|e| e.scheduled_at.unwrap_or(e.created_at))
            .collect();
        let size: Vec<i32> = chunk.iter().map(|e| content_size(e)).collect();
        // Claimed after the tenant's transactional mail (issue 26).
        let broadcast: Vec<bool> = chunk
            .iter()
            .map(|e| e.stream == crate::emails::stream::Stream::Broadcast.as_str())
            .collect();
        prepared::query(
            "INSERT INTO email_queue (tenant_id, email_id, next_attempt_at, size_bytes, broadcast) \
             SELECT * FROM unnest($1, $2, $3, $4, $5)",
        )
        .bind::<Array<SqlUuid>, _>(col(|e| e.tenant_id))
        .bind::<Array<SqlUuid>, _>(col(|e| e.id))
        .bind::<Array<Timestamptz>, _>(next)
        .bind::<Array<Integer>, _>(size)
        .bind::<Array<Bool>, _>(broadcast)
        .execute(conn)?;
    }
    Ok(())
}

/// One lease this worker holds: the fencing token of its claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    pub tenant_id: Uuid,
    pub email_id: Uuid,
    pub fence: i64,
}

fn columns(leases: &[Lease]) -> (Vec<Uuid>, Vec<Uuid>, Vec<i64>) {
    (
        leases.iter().map(|l| l.tenant_id).collect(),
        leases.iter().map(|l| l.email_id).collect(),
        leases.iter().map(|l| l.fence).collect(),
    )
}

/// Renews `leases` (those still held under their fence) and returns the
/// `(tenant_id, email_id)` of each still held, renewed or not. A row the
/// outcome recorder has locked is skipped, not waited for: it is being
/// recorded, and waiting would deadlock with the recorder (both lock many
/// rows, in no common order).
pub fn heartbeat(
    conn: &mut PgConnection,
    leases: &[Lease],
    lease_secs: f64,
) -> QueryResult<Vec<(Uuid, Uuid)>> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let (t, e, f) = columns(leases);
    let rows: Vec<Held> = diesel::sql_query(
        "WITH held AS ( \
           SELECT q.tenant_id, q.email_id, q.fence FROM email_queue q, unnest($1, $2, $3) AS u(t, e, f) \
           WHERE q.tenant_id = u.t AND q.email_id = u.e AND q.fence = u.f AND q.lease_until IS NOT NULL), \
         free AS ( \
           SELECT q.tenant_id, q.email_id FROM email_queue q JOIN held h USING (tenant_id, email_id) \
           WHERE q.fence = h.fence AND q.lease_until IS NOT NULL \
           FOR UPDATE OF q SKIP LOCKED), \
         renew AS ( \
           UPDATE email_queue q SET lease_until = now() + make_interval(secs => $4) \
           FROM free WHERE q.tenant_id = free.tenant_id AND q.email_id = free.email_id) \
         SELECT tenant_id, email_id FROM held",
    )
    .bind::<Array<SqlUuid>, _>(&t)
    .bind::<Array<SqlUuid>, _>(&e)
    .bind::<Array<BigInt>, _>(&f)
    .bind::<Double, _>(lease_secs)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.tenant_id, r.email_id))
        .collect())
}

#[derive(QueryableByName)]
struct Held {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    email_id: Uuid,
}

/// A message whose lease expired `max_lost` times without an outcome.
#[derive(Debug, QueryableByName)]
pub struct Lost {
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub email_id: Uuid,
    #[diesel(sql_type = BigInt)]
    pub fence: i64,
    #[diesel(sql_type = Integer)]
    pub lost: i32,
}

/// Expired leases become claimable again at once, counting the loss; the
/// fence stays, so the late worker's outcome still counts until another
/// claim takes the message. Returns (reclaimed, those lost `max_lost` times):
/// the caller fails the latter ([`super::record`]).
pub fn reclaim_expired(conn: &mut PgConnection, max_lost: i32) -> QueryResult<(usize, Vec<Lost>)> {
    let over: Vec<Lost> = diesel::sql_query(
        "SELECT tenant_id, email_id, fence, lost + 1 AS lost FROM email_queue \
         WHERE lease_until < now() AND lost + 1 >= $1 LIMIT 1000",
    )
    .bind::<Integer, _>(max_lost)
    .load(conn)?;
    let n = diesel::sql_query(
        "UPDATE email_queue SET lease_until = NULL, lost = lost + 1, next_attempt_at = now() \
         WHERE lease_until < now() AND lost + 1 < $1",
    )
    .bind::<Integer, _>(max_lost)
    .execute(conn)?;
    Ok((n, over))
}

/// Suspension: the tenant's waiting mail is held (not claimable; status
/// `held`). Mail in flight finishes; if it is deferred, [`hold_stragglers`]
/// holds it too.
pub fn hold_tenant(conn: &mut PgConnection, tenant: TenantId) -> QueryResult<usize> {
    diesel::sql_query(format!("{HOLD} AND q.tenant_id = $1 {HOLD_EMAILS}"))
        .bind::<SqlUuid, _>(tenant.0)
        .execute(conn)
}

/// Holds the waiting mail of every suspended (or reputation-paused) tenant
/// that is not held yet:
/// what such tenants had in flight when they were suspended and has come
/// back (deferred or requeued) since. One statement, driven by the (few)
/// suspended tenants through the queue's tenant-leading index, so its cost
/// does not grow with other tenants' backlogs.
pub fn hold_stragglers(conn: &mut PgConnection) -> QueryResult<usize> {
    diesel::sql_query(format!(
        "{HOLD} AND q.tenant_id = ANY(ARRAY(SELECT id FROM tenants WHERE status = 'suspended' \
                   UNION ALL SELECT tenant_id FROM tenant_reputation WHERE status = 'paused')) \
         {HOLD_EMAILS}"
    ))
    .execute(conn)
}

/// The start of a hold: the CTE `h` of the queue rows held, completed by
/// the caller's tenant condition and then [`HOLD_EMAILS`].
const HOLD: &str = "WITH h AS (UPDATE email_queue q SET held = true \
    WHERE NOT q.held AND q.lease_until IS NULL";
/// The messages of the rows held show `held`.
const HOLD_EMAILS: &str = "RETURNING q.tenant_id, q.email_id) \
    UPDATE emails e SET status = 'held' FROM h \
    WHERE e.tenant_id = h.tenant_id AND e.id = h.email_id AND e.status IN ('queued', 'deferred')";

/// The tenant is active again: its held mail is claimable at once (scheduled
/// mail, which a hold leaves `scheduled`, keeps its time).
pub fn resume_tenant(conn: &mut PgConnection, tenant: TenantId) -> QueryResult<usize> {
    diesel::sql_query(
        "WITH r AS (UPDATE email_queue q SET held = false, next_attempt_at = CASE \
             WHEN EXISTS (SELECT 1 FROM emails s WHERE s.tenant_id = q.tenant_id AND s.id = q.email_id \
                          AND s.status = 'scheduled') THEN q.next_attempt_at \
             ELSE LEAST(q.next_attempt_at, now()) END \
           WHERE q.tenant_id = $1 AND q.held RETURNING q.tenant_id, q.email_id) \
         UPDATE emails e SET status = 'queued' FROM r \
         WHERE e.tenant_id = r.tenant_id AND e.id = r.email_id AND e.status = 'held'",
    )
    .bind::<SqlUuid, _>(tenant.0)
    .execute(conn)
}

/// Deletion: the tenant's waiting and held mail leaves the queue; returns the
/// message ids (their `emails` rows are marked canceled by the caller).
pub fn remove_pending_of_tenant(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> QueryResult<Vec<Uuid>> {
    let rows: Vec<IdRow> = diesel::sql_query(
        "DELETE FROM email_queue WHERE tenant_id = $1 AND lease_until IS NULL RETURNING email_id",
    )
    .bind::<SqlUuid, _>(tenant.0)
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.email_id).collect())
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = SqlUuid)]
    email_id: Uuid,
}

/// What a reader sees of a message still in the queue.
#[derive(Debug, QueryableByName)]
pub struct QueueState {
    #[diesel(sql_type = SqlUuid)]
    pub email_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub next_attempt_at: chrono::DateTime<chrono::Utc>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub leased: bool,
}

/// Queue state of some of a tenant's messages (those not in the queue are
/// absent).
pub fn states(
    conn: &mut PgConnection,
    tenant: TenantId,
    ids: &[Uuid],
) -> QueryResult<Vec<QueueState>> {
    diesel::sql_query(
        "SELECT email_id, next_attempt_at, coalesce(lease_until > now(), false) AS leased \
         FROM email_queue WHERE tenant_id = $1 AND email_id = ANY($2)",
    )
    .bind::<SqlUuid, _>(tenant.0)
    .bind::<Array<SqlUuid>, _>(ids)
    .load(conn)
}

#[derive(QueryableByName)]
struct PairRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    email_id: Uuid,
}

/// Which of these messages are under lease right now (shown as `sending`).
pub fn leased(
    conn: &mut PgConnection,
    pairs: &[(Uuid, Uuid)],
) -> QueryResult<std::collections::HashSet<(Uuid, Uuid)>> {
    if pairs.is_empty() {
        return Ok(Default::default());
    }
    let t: Vec<Uuid> = pairs.iter().map(|p| p.0).collect();
    let e: Vec<Uuid> = pairs.iter().map(|p| p.1).collect();
    let rows: Vec<PairRow> = diesel::sql_query(
        "SELECT q.tenant_id, q.email_id FROM email_queue q JOIN unnest($1, $2) AS u(t, e) \
           ON q.tenant_id = u.t AND q.email_id = u.e WHERE q.lease_until > now()",
    )
    .bind::<Array<SqlUuid>, _>(&t)
    .bind::<Array<SqlUuid>, _>(&e)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.tenant_id, r.email_id))
        .collect())
}

#[derive(QueryableByName)]
pub struct DepthRow {
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// Messages in the queue by state (`ready`, `sending`, `held`).
pub fn depth(conn: &mut PgConnection) -> QueryResult<Vec<DepthRow>> {
    diesel::sql_query(
        "SELECT CASE WHEN held THEN 'held' WHEN lease_until IS NOT NULL THEN 'sending' \
           ELSE 'ready' END AS state, count(*) AS n FROM email_queue GROUP BY 1",
    )
    .load(conn)
}
