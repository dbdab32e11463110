//! `usage_stream_daily`: the counters a message's stream can be told for,
//! per tenant, UTC day and stream (issue 26), in shards like `usage_daily`
//! (which keeps the totals, written in the same transactions).
//!
//! Writers that know each message's stream add [`StreamDeltas`] with
//! [`add`]; those that know only the message ([`queue::record`],
//! `bounces::apply`) give `(tenant, email, counter)` to [`add_for_emails`],
//! which reads the stream from `emails` in the same statement. Both write
//! rows in (tenant, stream) order, so concurrent writers never lock them in
//! opposite orders. API requests, ingest suppressions, opens and clicks
//! belong to no stream and are kept in `usage_daily` only.
//!
//! [`queue::record`]: crate::queue

use std::collections::BTreeMap;

use chrono::NaiveDate;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Date, SmallInt, Text, Uuid as SqlUuid};
use uuid::Uuid;

use crate::emails::stream::Stream;

/// One stream's counters: the usage counters that belong to a message.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, QueryableByName, serde::Serialize, utoipa::ToSchema,
)]
pub struct StreamCounters {
    #[diesel(sql_type = BigInt)]
    pub emails_sent: i64,
    #[diesel(sql_type = BigInt)]
    pub emails_delivered: i64,
    #[diesel(sql_type = BigInt)]
    pub emails_bounced: i64,
    #[diesel(sql_type = BigInt)]
    pub emails_failed: i64,
    #[diesel(sql_type = BigInt)]
    pub emails_complained: i64,
    #[diesel(sql_type = BigInt)]
    pub emails_unsubscribed: i64,
}

impl StreamCounters {
    pub fn add(&mut self, o: &StreamCounters) {
        self.emails_sent += o.emails_sent;
        self.emails_delivered += o.emails_delivered;
        self.emails_bounced += o.emails_bounced;
        self.emails_failed += o.emails_failed;
        self.emails_complained += o.emails_complained;
        self.emails_unsubscribed += o.emails_unsubscribed;
    }

    fn is_zero(&self) -> bool {
        *self == StreamCounters::default()
    }
}

/// Deltas per (tenant, stream).
pub type StreamDeltas = BTreeMap<(Uuid, &'static str), StreamCounters>;

/// A counter one message adds to (for [`add_for_emails`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Delivered,
    Bounced,
    Failed,
    Complained,
}

impl Counter {
    fn as_str(self) -> &'static str {
        match self {
            Counter::Delivered => "delivered",
            Counter::Bounced => "bounced",
            Counter::Failed => "failed",
            Counter::Complained => "complained",
        }
    }
}

/// Adds the deltas on `shard` in one statement, in (tenant, stream) order;
/// the ingest commit runs it, so its text is fixed and kept prepared.
pub fn add(
    conn: &mut PgConnection,
    day: NaiveDate,
    shard: i16,
    deltas: &StreamDeltas,
) -> QueryResult<()> {
    let deltas: Vec<(&(Uuid, &str), &StreamCounters)> =
        deltas.iter().filter(|(_, c)| !c.is_zero()).collect();
    if deltas.is_empty() {
        return Ok(());
    }
    let col =
        |f: fn(&StreamCounters) -> i64| deltas.iter().map(|(_, c)| f(c)).collect::<Vec<i64>>();
    let tenants: Vec<Uuid> = deltas.iter().map(|((t, _), _)| *t).collect();
    let streams: Vec<&str> = deltas.iter().map(|((_, s), _)| *s).collect();
    crate::db::prepared::query(
        "INSERT INTO usage_stream_daily AS u (tenant_id, day, stream, shard, emails_sent, emails_delivered, \
           emails_bounced, emails_failed, emails_complained, emails_unsubscribed) \
         SELECT t, $2, s, $3, se, de, bo, fa, co, un \
         FROM unnest($1, $4, $5, $6, $7, $8, $9, $10) AS x(t, s, se, de, bo, fa, co, un) ORDER BY t, s \
         ON CONFLICT (tenant_id, day, stream, shard) DO UPDATE SET \
           emails_sent = u.emails_sent + EXCLUDED.emails_sent, \
           emails_delivered = u.emails_delivered + EXCLUDED.emails_delivered, \
           emails_bounced = u.emails_bounced + EXCLUDED.emails_bounced, \
           emails_failed = u.emails_failed + EXCLUDED.emails_failed, \
           emails_complained = u.emails_complained + EXCLUDED.emails_complained, \
           emails_unsubscribed = u.emails_unsubscribed + EXCLUDED.emails_unsubscribed",
    )
    .bind::<Array<SqlUuid>, _>(&tenants)
    .bind::<Date, _>(day)
    .bind::<SmallInt, _>(shard)
    .bind::<Array<Text>, _>(&streams)
    .bind::<Array<BigInt>, _>(col(|c| c.emails_sent))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_delivered))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_bounced))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_failed))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_complained))
    .bind::<Array<BigInt>, _>(col(|c| c.emails_unsubscribed))
    .execute(conn)
    .map(|_| ())
}

/// Counts accepted messages (`emails_sent`) by their tenant and stream.
pub fn sent<'a>(messages: impl IntoIterator<Item = (Uuid, &'a str)>) -> StreamDeltas {
    let mut deltas = StreamDeltas::new();
    for (tenant, stream) in messages {
        let stream = Stream::parse(stream).unwrap_or_default().as_str();
        deltas.entry((tenant, stream)).or_default().emails_sent += 1;
    }
    deltas
}

/// Adds one to `counter` for each message, on its stored stream (one
/// statement; messages no longer stored count nowhere).
pub fn add_for_emails(
    conn: &mut PgConnection,
    day: NaiveDate,
    shard: i16,
    items: &[(Uuid, Uuid, Counter)],
) -> QueryResult<()> {
    if items.is_empty() {
        return Ok(());
    }
    let tenants: Vec<Uuid> = items.iter().map(|i| i.0).collect();
    let emails: Vec<Uuid> = items.iter().map(|i| i.1).collect();
    let kinds: Vec<&str> = items.iter().map(|i| i.2.as_str()).collect();
    diesel::sql_query(
        "INSERT INTO usage_stream_daily AS u (tenant_id, day, stream, shard, emails_delivered, \
           emails_bounced, emails_failed, emails_complained) \
         SELECT e.tenant_id, $4, e.stream, $5, \
           count(*) FILTER (WHERE x.k = 'delivered'), count(*) FILTER (WHERE x.k = 'bounced'), \
           count(*) FILTER (WHERE x.k = 'failed'), count(*) FILTER (WHERE x.k = 'complained') \
         FROM unnest($1, $2, $3) AS x(t, m, k) JOIN emails e ON e.tenant_id = x.t AND e.id = x.m \
         GROUP BY e.tenant_id, e.stream ORDER BY e.tenant_id, e.stream \
         ON CONFLICT (tenant_id, day, stream, shard) DO UPDATE SET \
           emails_delivered = u.emails_delivered + EXCLUDED.emails_delivered, \
           emails_bounced = u.emails_bounced + EXCLUDED.emails_bounced, \
           emails_failed = u.emails_failed + EXCLUDED.emails_failed, \
           emails_complained = u.emails_complained + EXCLUDED.emails_complained",
    )
    .bind::<Array<SqlUuid>, _>(&tenants)
    .bind::<Array<SqlUuid>, _>(&emails)
    .bind::<Array<Text>, _>(&kinds)
    .bind::<Date, _>(day)
    .bind::<SmallInt, _>(shard)
    .execute(conn)
    .map(|_| ())
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(embed)]
    counters: StreamCounters,
}

/// One stream's daily counters (shards summed) of the given tenants between
/// two dates (inclusive), by tenant and day.
pub fn days(
    conn: &mut PgConnection,
    tenants: &[Uuid],
    stream: Stream,
    from: NaiveDate,
    to: NaiveDate,
) -> QueryResult<Vec<(Uuid, NaiveDate, StreamCounters)>> {
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT tenant_id, day, sum(emails_sent)::bigint AS emails_sent, \
           sum(emails_delivered)::bigint AS emails_delivered, sum(emails_bounced)::bigint AS emails_bounced, \
           sum(emails_failed)::bigint AS emails_failed, sum(emails_complained)::bigint AS emails_complained, \
           sum(emails_unsubscribed)::bigint AS emails_unsubscribed \
         FROM usage_stream_daily WHERE tenant_id = ANY($1) AND stream = $2 AND day BETWEEN $3 AND $4 \
         GROUP BY tenant_id, day ORDER BY tenant_id, day",
    )
    .bind::<Array<SqlUuid>, _>(tenants)
    .bind::<Text, _>(stream.as_str())
    .bind::<Date, _>(from)
    .bind::<Date, _>(to)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.tenant_id, r.day, r.counters))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_counts_by_tenant_and_stream() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let d = sent([
            (a, "broadcast"),
            (a, "transactional"),
            (a, "broadcast"),
            (b, "x"),
        ]);
        assert_eq!(d[&(a, "broadcast")].emails_sent, 2);
        assert_eq!(d[&(a, "transactional")].emails_sent, 1);
        assert_eq!(d[&(b, "transactional")].emails_sent, 1);
        assert_eq!(d.len(), 3);
    }
}
