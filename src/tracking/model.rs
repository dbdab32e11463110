//! The SQL of tracking events: one transaction per batch of hits.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

use crate::db::schema::email_events;
use crate::emails::model::NewEvent;
use crate::usage::model::{self as usage, Counters};

#[derive(QueryableByName)]
struct Sent {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    delivered_at: Option<DateTime<Utc>>,
}

/// When each found message was delivered (`None`: not yet).
pub type DeliveredAt = HashMap<(Uuid, Uuid), Option<DateTime<Utc>>>;

/// The messages among `keys` that still exist (their metadata not purged,
/// their tenant not deleted), with their delivery time.
pub fn delivered_at(conn: &mut PgConnection, keys: &[(Uuid, Uuid)]) -> QueryResult<DeliveredAt> {
    let (t, e): (Vec<Uuid>, Vec<Uuid>) = keys.iter().copied().unzip();
    let rows: Vec<Sent> = diesel::sql_query(
        "SELECT m.tenant_id, m.id, m.delivered_at FROM emails m \
         JOIN unnest($1, $2) AS u(t, e) ON m.tenant_id = u.t AND m.id = u.e",
    )
    .bind::<Array<SqlUuid>, _>(&t)
    .bind::<Array<SqlUuid>, _>(&e)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.tenant_id, r.id), r.delivered_at))
        .collect())
}

#[derive(QueryableByName)]
struct Firsted {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
}

/// A human open or click of one recipient.
pub struct First {
    pub tenant_id: Uuid,
    pub email_id: Uuid,
    pub recipient: String,
    pub at: DateTime<Utc>,
}

/// Sets `first_opened_at` (`clicks` false) or `first_clicked_at` where it
/// is not set yet; returns, per tenant, how many recipients it set.
fn set_first(
    conn: &mut PgConnection,
    firsts: &[First],
    clicks: bool,
) -> QueryResult<BTreeMap<Uuid, i64>> {
    if firsts.is_empty() {
        return Ok(BTreeMap::new());
    }
    let col = if clicks {
        "first_clicked_at"
    } else {
        "first_opened_at"
    };
    let t: Vec<Uuid> = firsts.iter().map(|f| f.tenant_id).collect();
    let e: Vec<Uuid> = firsts.iter().map(|f| f.email_id).collect();
    let r: Vec<&str> = firsts.iter().map(|f| f.recipient.as_str()).collect();
    let at: Vec<DateTime<Utc>> = firsts.iter().map(|f| f.at).collect();
    // The earliest hit per recipient of the batch; rows in key order.
    let rows: Vec<Firsted> = diesel::sql_query(format!(
        "UPDATE email_recipients r SET {col} = u.at \
         FROM (SELECT t, e, rc, min(at) AS at FROM unnest($1, $2, $3, $4) AS x(t, e, rc, at) \
               GROUP BY t, e, rc ORDER BY t, e, rc) AS u \
         WHERE r.tenant_id = u.t AND r.email_id = u.e AND r.recipient = u.rc AND r.{col} IS NULL \
         RETURNING r.tenant_id"
    ))
    .bind::<Array<SqlUuid>, _>(&t)
    .bind::<Array<SqlUuid>, _>(&e)
    .bind::<Array<Text>, _>(&r)
    .bind::<Array<Timestamptz>, _>(&at)
    .load(conn)?;
    let mut out = BTreeMap::new();
    for row in rows {
        *out.entry(row.tenant_id).or_insert(0) += 1;
    }
    Ok(out)
}

/// Writes a batch in one transaction: the events (timeline and webhook
/// outbox), the first human open / click per recipient, and the unique
/// counts in usage.
pub fn write(
    conn: &mut PgConnection,
    events: &[NewEvent],
    opens: &[First],
    clicks: &[First],
) -> QueryResult<()> {
    conn.transaction(|conn| {
        // The hits were matched to messages outside this transaction:
        // retention may have deleted one since (`email_events` has no
        // foreign key to catch it).
        let keys: Vec<(Uuid, Uuid)> = events.iter().map(|e| (e.tenant_id, e.email_id)).collect();
        let present = crate::emails::model::lock_present(conn, &keys)?;
        let events: Vec<NewEvent> = events
            .iter()
            .filter(|e| present.contains(&(e.tenant_id, e.email_id)))
            .cloned()
            .collect();
        if !events.is_empty() {
            diesel::insert_into(email_events::table)
                .values(&events)
                .execute(conn)?;
            crate::webhooks::outbox::enqueue(conn, &events)?;
        }
        let opened = set_first(conn, opens, false)?;
        let clicked = set_first(conn, clicks, true)?;
        let mut deltas: BTreeMap<Uuid, Counters> = BTreeMap::new();
        for (t, n) in opened {
            deltas.entry(t).or_default().emails_opened += n;
        }
        for (t, n) in clicked {
            deltas.entry(t).or_default().emails_clicked += n;
        }
        usage::add(conn, Utc::now().date_naive(), usage::pick_shard(), &deltas)
    })
}

/// The most specific of the tenant's domains among `names` whose tracking
/// record (`track.<domain>`) checked `ok` at the last check.
pub fn tracking_domain_for(
    conn: &mut PgConnection,
    tenant: crate::domain::TenantId,
    names: &[String],
) -> QueryResult<Option<String>> {
    use crate::db::schema::domains;
    let rows: Vec<(String, serde_json::Value)> = domains::table
        .filter(domains::tenant_id.eq(tenant.0))
        .filter(domains::name.eq_any(names))
        .select((domains::name, domains::checks))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter(|(name, checks)| {
            checks
                .get(check_key(name))
                .and_then(serde_json::Value::as_str)
                == Some("ok")
        })
        .max_by_key(|(name, _)| name.len())
        .map(|(name, _)| name))
}

/// Key of the tracking record's status in `domains.checks`.
pub fn check_key(domain: &str) -> String {
    format!("tracking:{}", super::host::record_name(domain))
}
