//! Fair claiming (issue 10): due work is taken across tenants in turn.
//!
//! A claim walks the tenants that have claimable rows in `email_queue_ready`
//! in id order, starting after the tenant where the previous claim of this
//! loop stopped (a round-robin cursor, wrapping around), one index descent per
//! tenant, and keeps those whose earliest row is due, that are active, and
//! that are neither paced out nor at their in-flight caps (messages, bytes).
//! The wanted slots are shared evenly among them; each tenant's share is its
//! earliest due rows (`FOR UPDATE SKIP LOCKED`), interleaved so the byte
//! budget cuts evenly too. A tenant's next message that does not fit the
//! bytes left (the budget's, or the tenant's own share of it) ends that
//! tenant's turn in this claim, not the claim: the others' mail still goes.
//! So a backlog of one tenant takes at most its share of a claim, its large
//! mail at most its byte share, and a tenant with one due message gets it
//! into the next claim round.
//!
//! Within a tenant, transactional rows come before broadcast rows (index
//! `email_queue_ready_stream`), and its broadcast mail in flight stays below
//! [`broadcast_cap`]: a broadcast backlog delays the tenant's transactional
//! mail by at most one claim round (issue 26).
//!
//! Cost: one descent per tenant with claimable rows walked (up to the tenants
//! wanted, more only while walked tenants have nothing due), plus one per
//! tenant taken; independent of how many rows each tenant has queued.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Integer, Uuid as SqlUuid};
use uuid::Uuid;

use super::model::Lease;
use super::take::{take_within, Candidate};
use crate::emails::model::EmailRow;

/// What the worker can take now.
pub struct Want<'a> {
    /// Free in-flight slots (messages).
    pub slots: usize,
    /// Free in-flight bytes (`email_queue.size_bytes`).
    pub bytes: i64,
    /// Nothing is in flight: one message larger than `bytes` may still go,
    /// alone (else it could never be sent).
    pub idle: bool,
    /// The most messages of one tenant in flight at once.
    pub tenant_cap: usize,
    /// The most content bytes of one tenant in flight at once; a tenant with
    /// nothing in flight may still take one larger message.
    pub tenant_bytes: i64,
    /// What each tenant has in flight now.
    pub inflight: &'a HashMap<Uuid, Held>,
    /// Tenants left out of this claim (paced).
    pub skip: &'a [Uuid],
    pub lease_secs: f64,
}

/// What one tenant has in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub count: usize,
    pub bytes: i64,
    /// Of `count`, broadcast messages (issue 26).
    pub broadcast: usize,
}

/// The most broadcast messages of one tenant in flight at once: a quarter of
/// its cap (at least one slot) stays for its transactional mail, so a
/// broadcast backlog behind a slow site never holds every slot.
pub fn broadcast_cap(tenant_cap: usize) -> usize {
    tenant_cap.saturating_sub((tenant_cap / 4).max(1)).max(1)
}

/// One claimed message with its content.
pub struct Claimed {
    pub lease: Lease,
    /// Leases of it that expired before (a worker died or hung).
    pub lost: i32,
    pub size_bytes: i32,
    pub row: EmailRow,
    /// Its `email_recipients` rows, every status (empty for mail queued
    /// before they existed: then every address is sent to).
    pub recipients: Vec<crate::bounces::recipients::RecipientRow>,
}

pub struct Claim {
    pub messages: Vec<Claimed>,
    /// Some tenant had more due than its share: claim again when slots free.
    pub more: bool,
}

const MAX_UUID: Uuid = Uuid::from_u128(u128::MAX);

#[derive(QueryableByName)]
struct TenantRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
}

/// Up to `n` tenants with due, claimable mail in `(after, upto]`, in id order.
fn walk(
    conn: &mut PgConnection,
    after: Uuid,
    upto: Uuid,
    skip: &[Uuid],
    n: usize,
) -> QueryResult<Vec<Uuid>> {
    let rows: Vec<TenantRow> = diesel::sql_query(
        "WITH RECURSIVE walk AS ( \
           (SELECT tenant_id, next_attempt_at FROM email_queue \
            WHERE lease_until IS NULL AND NOT held AND tenant_id > $1 AND tenant_id <= $2 \
            ORDER BY tenant_id, next_attempt_at LIMIT 1) \
           UNION ALL \
           SELECT nx.tenant_id, nx.next_attempt_at FROM walk w CROSS JOIN LATERAL \
             (SELECT q.tenant_id, q.next_attempt_at FROM email_queue q \
              WHERE q.lease_until IS NULL AND NOT q.held AND q.tenant_id > w.tenant_id AND q.tenant_id <= $2 \
              ORDER BY q.tenant_id, q.next_attempt_at LIMIT 1) nx) \
         SELECT w.tenant_id FROM walk w \
         WHERE w.next_attempt_at <= now() AND NOT (w.tenant_id = ANY($3)) \
           AND EXISTS (SELECT 1 FROM tenants t WHERE t.id = w.tenant_id AND t.status = 'active') \
         LIMIT $4",
    )
    .bind::<SqlUuid, _>(after)
    .bind::<SqlUuid, _>(upto)
    .bind::<Array<SqlUuid>, _>(skip)
    .bind::<BigInt, _>(i64::try_from(n).unwrap_or(i64::MAX))
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.tenant_id).collect())
}

/// Drops each tenant's broadcast candidates past its [`broadcast_cap`]
/// (they stay queued for a later claim).
fn within_broadcast_cap(candidates: Vec<Candidate>, want: &Want) -> Vec<Candidate> {
    let cap = broadcast_cap(want.tenant_cap);
    let mut room: HashMap<Uuid, usize> = HashMap::new();
    candidates
        .into_iter()
        .filter(|c| {
            if !c.broadcast {
                return true;
            }
            let r = room.entry(c.tenant_id).or_insert_with(|| {
                cap.saturating_sub(want.inflight.get(&c.tenant_id).map_or(0, |h| h.broadcast))
            });
            if *r == 0 {
                return false;
            }
            *r -= 1;
            true
        })
        .collect()
}

#[derive(QueryableByName)]
struct Leased {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    email_id: Uuid,
    #[diesel(sql_type = BigInt)]
    fence: i64,
    #[diesel(sql_type = Integer)]
    lost: i32,
    #[diesel(sql_type = Integer)]
    size_bytes: i32,
}

/// Claims fairly (see the module doc), advancing `cursor`. One transaction.
pub fn claim(conn: &mut PgConnection, want: &Want, cursor: &mut Uuid) -> QueryResult<Claim> {
    let empty = Claim {
        messages: Vec::new(),
        more: false,
    };
    if want.slots == 0 {
        return Ok(empty);
    }
    let mut skip: Vec<Uuid> = want.skip.to_vec();
    skip.extend(
        want.inflight
            .iter()
            .filter(|(_, h)| h.count >= want.tenant_cap || h.bytes >= want.tenant_bytes)
            .map(|(t, _)| *t),
    );
    conn.transaction(|conn| {
        let mut tenants = walk(conn, *cursor, MAX_UUID, &skip, want.slots)?;
        if tenants.len() < want.slots && !cursor.is_nil() {
            let rest = walk(
                conn,
                Uuid::nil(),
                *cursor,
                &skip,
                want.slots - tenants.len(),
            )?;
            tenants.extend(rest);
        }
        let Some(last) = tenants.last() else {
            *cursor = Uuid::nil();
            return Ok(empty);
        };
        *cursor = *last;
        let even = want.slots.div_ceil(tenants.len());
        let shares: Vec<i32> = tenants
            .iter()
            .map(|t| {
                let held = want.inflight.get(t).map_or(0, |h| h.count);
                let room = want.tenant_cap.saturating_sub(held);
                i32::try_from(even.min(room)).unwrap_or(i32::MAX)
            })
            .collect();
        let candidates: Vec<Candidate> = diesel::sql_query(
            "SELECT c.tenant_id, c.email_id, c.size_bytes, c.broadcast \
             FROM unnest($1, $2) WITH ORDINALITY AS d(t, share, ord) CROSS JOIN LATERAL \
               (SELECT q.tenant_id, q.email_id, q.size_bytes, q.broadcast, q.next_attempt_at FROM email_queue q \
                WHERE q.tenant_id = d.t AND q.lease_until IS NULL AND NOT q.held \
                  AND q.next_attempt_at <= now() \
                ORDER BY q.broadcast, q.next_attempt_at LIMIT d.share FOR UPDATE SKIP LOCKED) c \
             ORDER BY d.ord, c.broadcast, c.next_attempt_at",
        )
        .bind::<Array<SqlUuid>, _>(&tenants)
        .bind::<Array<Integer>, _>(&shares)
        .load(conn)?;
        let candidates = within_broadcast_cap(candidates, want);
        let mut per: HashMap<Uuid, i32> = HashMap::new();
        for c in &candidates {
            *per.entry(c.tenant_id).or_default() += 1;
        }
        let found = candidates.len();
        let taken = take_within(candidates, &tenants, want);
        // Claimable mail was left: a tenant had more than its share, or the
        // bytes left cut the claim.
        let more = taken.len() < found
            || tenants
                .iter()
                .zip(&shares)
                .any(|(t, s)| *s > 0 && per.get(t).copied().unwrap_or(0) >= *s);
        if taken.is_empty() {
            return Ok(Claim {
                messages: Vec::new(),
                more,
            });
        }
        let t: Vec<Uuid> = taken.iter().map(|c| c.tenant_id).collect();
        let e: Vec<Uuid> = taken.iter().map(|c| c.email_id).collect();
        let leased: Vec<Leased> = diesel::sql_query(
            "UPDATE email_queue AS q \
             SET lease_until = now() + make_interval(secs => $3), fence = q.fence + 1 \
             FROM unnest($1, $2) AS u(t, e) WHERE q.tenant_id = u.t AND q.email_id = u.e \
             RETURNING q.tenant_id, q.email_id, q.fence, q.lost, q.size_bytes",
        )
        .bind::<Array<SqlUuid>, _>(&t)
        .bind::<Array<SqlUuid>, _>(&e)
        .bind::<Double, _>(want.lease_secs)
        .load(conn)?;
        let rows: Vec<EmailRow> = diesel::sql_query(
            "SELECT e.* FROM emails e JOIN unnest($1, $2) AS u(t, i) \
               ON e.tenant_id = u.t AND e.id = u.i",
        )
        .bind::<Array<SqlUuid>, _>(&t)
        .bind::<Array<SqlUuid>, _>(&e)
        .load(conn)?;
        let mut by_id: HashMap<(Uuid, Uuid), EmailRow> =
            rows.into_iter().map(|r| ((r.tenant_id, r.id), r)).collect();
        let keys: Vec<(Uuid, Uuid)> = t.iter().copied().zip(e.iter().copied()).collect();
        let mut rcpts: HashMap<(Uuid, Uuid), Vec<_>> = HashMap::new();
        for r in crate::bounces::recipients::of_emails(conn, &keys)? {
            rcpts.entry((r.tenant_id, r.email_id)).or_default().push(r);
        }
        let messages = leased
            .into_iter()
            .filter_map(|l| {
                let row = by_id.remove(&(l.tenant_id, l.email_id))?;
                Some(Claimed {
                    lease: Lease {
                        tenant_id: l.tenant_id,
                        email_id: l.email_id,
                        fence: l.fence,
                    },
                    lost: l.lost,
                    size_bytes: l.size_bytes,
                    recipients: rcpts.remove(&(l.tenant_id, l.email_id)).unwrap_or_default(),
                    row,
                })
            })
            .collect();
        Ok(Claim { messages, more })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(t: Uuid, broadcast: bool) -> Candidate {
        Candidate {
            tenant_id: t,
            email_id: Uuid::new_v4(),
            size_bytes: 1,
            broadcast,
        }
    }

    #[test]
    fn broadcast_leaves_room_for_transactional_mail() {
        assert_eq!(broadcast_cap(1), 1, "one slot: broadcast still goes");
        assert_eq!(broadcast_cap(2), 1);
        assert_eq!(broadcast_cap(8), 6);
        assert_eq!(broadcast_cap(64), 48);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let inflight = HashMap::from([(
            a,
            Held {
                count: 5,
                bytes: 5,
                broadcast: 5,
            },
        )]);
        let want = Want {
            slots: 16,
            bytes: 1 << 30,
            idle: false,
            tenant_cap: 8,
            tenant_bytes: 1 << 30,
            inflight: &inflight,
            skip: &[],
            lease_secs: 30.0,
        };
        let all = vec![
            cand(a, false),
            cand(a, true),
            cand(a, true),
            cand(b, true),
            cand(b, true),
        ];
        let kept = within_broadcast_cap(all, &want);
        // A: 5 broadcast in flight, cap 6: one more broadcast, any transactional.
        assert_eq!(kept.iter().filter(|c| c.tenant_id == a).count(), 2);
        assert_eq!(
            kept.iter()
                .filter(|c| c.tenant_id == a && !c.broadcast)
                .count(),
            1
        );
        assert_eq!(kept.iter().filter(|c| c.tenant_id == b).count(), 2);
    }
}
