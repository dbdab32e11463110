//! The state machine of a DNS check (pending → verified → failed after the
//! grace period; DKIM keys pending → active, the replaced key retiring, then
//! deleted), as a function over rows the caller has locked and the fresh
//! DNS answers in `checks`; the service writes what it changed.

use chrono::{DateTime, Utc};
use diesel::QueryResult;
use uuid::Uuid;

use super::checks::{self, Record};
use super::model::{DkimKeyRow, DomainRow};
use crate::config::DomainSettings;

/// What a check changed.
#[derive(Default)]
pub struct Change {
    pub event: Option<&'static str>,
    pub taken: bool,
    pub changed: Vec<DkimKeyRow>,
    pub deleted: Vec<DkimKeyRow>,
}

/// The state machine of a check, on rows whose `checks` hold the fresh
/// statuses. `is_taken` is asked only when the domain would become verified.
pub fn apply(
    domain: &mut DomainRow,
    keys: &mut [DkimKeyRow],
    s: &DomainSettings,
    now: DateTime<Utc>,
    mut is_taken: impl FnMut(&str) -> QueryResult<bool>,
) -> QueryResult<Change> {
    let mut change = Change::default();
    // The return-path record is never required: without it the list is the same here.
    let list: Vec<Record> = checks::records(domain, keys, "", "");
    let ok = |r: &Record| checks::last_status(&domain.checks, r) == "ok";
    let required: Vec<&Record> = list.iter().filter(|r| r.required).collect();
    let all_ok = !required.is_empty() && required.iter().all(|r| ok(r));
    let published: Vec<Uuid> = list
        .iter()
        .filter(|r| ok(r))
        .filter_map(|r| r.key)
        .collect();
    domain.last_checked_at = Some(now);
    domain.next_check_at = now + secs(s.recheck_secs);

    let verified_now = if all_ok && domain.status != "verified" {
        if is_taken(&domain.name)? {
            change.taken = true;
            false
        } else {
            true
        }
    } else {
        domain.status == "verified" && all_ok
    };
    if all_ok && !change.taken {
        domain.failing_since = None;
        if domain.status != "verified" {
            domain.status = "verified".into();
            domain.verified_at = Some(now);
            change.event = Some("domain.verified");
        }
    } else if domain.status == "verified" {
        let since = *domain.failing_since.get_or_insert(now);
        if now - since >= secs(s.grace_secs) {
            domain.status = "failed".into();
            change.event = Some("domain.failed");
        }
    }
    // Keys: a published pending key signs once the domain is verified; the
    // key it replaces (same algorithm) is retiring from then on.
    if verified_now || domain.status == "verified" {
        let activate: Vec<usize> = (0..keys.len())
            .filter(|&i| keys[i].status == "pending" && published.contains(&keys[i].id))
            .collect();
        for i in activate {
            let alg = keys[i].algorithm.clone();
            for old in keys
                .iter_mut()
                .filter(|k| k.status == "active" && k.algorithm == alg)
            {
                old.status = "retiring".into();
                old.retire_at = Some(now + chrono::Duration::days(i64::from(s.dkim_retire_days)));
                change.changed.push(old.clone());
            }
            keys[i].status = "active".into();
            keys[i].activated_at = Some(now);
            change.changed.push(keys[i].clone());
        }
    }
    for k in keys
        .iter()
        .filter(|k| k.status == "retiring" && k.retire_at.is_some_and(|t| t <= now))
    {
        change.deleted.push(k.clone());
    }
    Ok(change)
}

pub fn secs(n: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 4_000))
}
