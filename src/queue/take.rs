//! Which of a claim's candidates fit what the worker can take: slots, the
//! byte budget, and each tenant's share of it (issue 22, finding 8).

use std::collections::{HashMap, VecDeque};

use diesel::prelude::*;
use diesel::sql_types::{Integer, Uuid as SqlUuid};
use uuid::Uuid;

use super::claim::Want;

/// A claimable row, locked by the claim's `FOR UPDATE SKIP LOCKED`.
#[derive(QueryableByName)]
pub(super) struct Candidate {
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub email_id: Uuid,
    #[diesel(sql_type = Integer)]
    pub size_bytes: i32,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub broadcast: bool,
}

/// The candidates to lease: round-robin over tenants (walk order), within
/// the slots, the byte budget and each tenant's byte share. A tenant whose
/// next candidate does not fit is passed over for the rest of this claim
/// (its own order kept: no smaller later message overtakes it); the others
/// go on. Alone, a message may exceed the tenant's share (nothing else of
/// the tenant in flight) or the whole budget (nothing in flight at all).
pub(super) fn take_within(
    candidates: Vec<Candidate>,
    tenants: &[Uuid],
    want: &Want,
) -> Vec<Candidate> {
    let mut queues: Vec<VecDeque<Candidate>> = tenants.iter().map(|_| Default::default()).collect();
    let index: HashMap<Uuid, usize> = tenants.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    for c in candidates {
        if let Some(i) = index.get(&c.tenant_id) {
            queues[*i].push_back(c);
        }
    }
    let mut held: Vec<i64> = tenants
        .iter()
        .map(|t| want.inflight.get(t).map_or(0, |h| h.bytes))
        .collect();
    let mut taken = Vec::new();
    let mut bytes = 0i64;
    loop {
        let mut any = false;
        for (q, tenant_held) in queues.iter_mut().zip(held.iter_mut()) {
            let Some(c) = q.front() else { continue };
            let size = i64::from(c.size_bytes.max(0));
            let fits_budget = bytes + size <= want.bytes || (want.idle && taken.is_empty());
            let fits_share = *tenant_held + size <= want.tenant_bytes || *tenant_held == 0;
            if !(fits_budget && fits_share) {
                q.clear();
                continue;
            }
            any = true;
            bytes += size;
            *tenant_held += size;
            if let Some(c) = q.pop_front() {
                taken.push(c);
            }
            if taken.len() >= want.slots {
                return taken;
            }
        }
        if !any {
            return taken;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::claim::{Held, Want};

    const MIB: i32 = 1024 * 1024;

    fn candidates(tenant: Uuid, sizes: &[i32]) -> Vec<Candidate> {
        sizes
            .iter()
            .map(|&size_bytes| Candidate {
                broadcast: false,
                tenant_id: tenant,
                email_id: Uuid::new_v4(),
                size_bytes,
            })
            .collect()
    }

    fn want<'a>(inflight: &'a HashMap<Uuid, Held>, bytes: i64, idle: bool) -> Want<'a> {
        Want {
            slots: 64,
            bytes,
            idle,
            tenant_cap: 64,
            tenant_bytes: 8 * i64::from(MIB),
            inflight,
            skip: &[],
            lease_secs: 10.0,
        }
    }

    fn sizes_of(taken: &[Candidate], tenant: Uuid) -> Vec<i32> {
        taken
            .iter()
            .filter(|c| c.tenant_id == tenant)
            .map(|c| c.size_bytes)
            .collect()
    }

    #[test]
    fn a_tenant_gets_its_byte_share_and_a_candidate_that_does_not_fit_ends_only_its_turn() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut all = candidates(a, &[9 * MIB / 2; 16]);
        all.extend(candidates(b, &[1024]));
        all.extend(candidates(c, &[4 * MIB]));
        let none = HashMap::new();
        // A is walked first; the budget is 16 MiB, a tenant's share 8 MiB.
        let taken = take_within(all, &[a, b, c], &want(&none, 16 * i64::from(MIB), true));
        assert_eq!(
            sizes_of(&taken, a),
            vec![9 * MIB / 2],
            "A held over its share"
        );
        assert_eq!(sizes_of(&taken, b), vec![1024]);
        assert_eq!(sizes_of(&taken, c), vec![4 * MIB]);
    }

    #[test]
    fn a_tenant_at_its_share_takes_nothing_more_and_others_still_do() {
        let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
        let mut all = candidates(a, &[MIB]);
        all.extend(candidates(c, &[MIB, MIB]));
        let inflight = HashMap::from([(
            a,
            Held {
                count: 1,
                bytes: 15 * i64::from(MIB) / 2,
                broadcast: 0,
            },
        )]);
        let taken = take_within(all, &[a, c], &want(&inflight, 8 * i64::from(MIB), false));
        assert!(sizes_of(&taken, a).is_empty());
        assert_eq!(sizes_of(&taken, c), vec![MIB, MIB]);
    }

    #[test]
    fn alone_a_message_may_exceed_the_share_or_the_whole_budget() {
        let a = Uuid::new_v4();
        let none = HashMap::new();
        // Over the tenant's share, within the budget: nothing of A in flight.
        let taken = take_within(
            candidates(a, &[12 * MIB, MIB]),
            &[a],
            &want(&none, 16 * i64::from(MIB), false),
        );
        assert_eq!(
            sizes_of(&taken, a),
            vec![12 * MIB],
            "then A is at its share"
        );
        // Over the whole budget: only when nothing is in flight.
        let big = || candidates(a, &[20 * MIB]);
        assert_eq!(
            take_within(big(), &[a], &want(&none, 16 * i64::from(MIB), true)).len(),
            1
        );
        assert!(take_within(big(), &[a], &want(&none, 16 * i64::from(MIB), false)).is_empty());
    }
}
