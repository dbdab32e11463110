//! The daily quota (`emails_per_day`), exact across nodes: the first user of
//! leased budgets (`crate::cluster::budget`, whose module doc states the
//! rules). The budget of a tenant's day is `emails_per_day:<day>`; what it
//! has used is the day's `emails_sent` (all usage shards), counted in the
//! same transaction as the messages.
//!
//! Before a commit, [`prepare`] takes each submission's messages from this
//! node's lease of the tenant's budget, asking for a grant when the lease
//! cannot cover them. Inside the commit, [`check`] locks the rows of the
//! budgets decided exactly (closed ones) first, then holds the leases spent
//! from, and says per submission: admitted, refused (over quota) or retry
//! (its lease went meanwhile). After it, [`Plan::finish`] settles the
//! reservations.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::PgConnection;
use uuid::Uuid;

use crate::cluster::{BudgetKey, Budgets, GrantRequest, Granted, Reservation, Reserve};
use crate::usage::model as usage;

/// The budget of `tenant`'s quota on `day`.
pub fn key(tenant: Uuid, day: NaiveDate) -> BudgetKey {
    BudgetKey {
        tenant_id: tenant,
        name: format!("emails_per_day:{day}"),
    }
}

/// A day's budget rows outlive the day by one more, then are purged.
fn ends_at(day: NaiveDate) -> DateTime<Utc> {
    (day + chrono::Days::new(2))
        .and_hms_opt(0, 0, 0)
        .map_or_else(Utc::now, |t| t.and_utc())
}

/// Messages one submission sends for one quota-bound tenant.
#[derive(Clone, Copy, Debug)]
pub struct Need {
    pub tenant: Uuid,
    pub n: i64,
    pub limit: i64,
}

enum Admission {
    Leased(Reservation),
    Exact(Need),
}

/// How each submission's quota is to be admitted, decided before the
/// commit; the reservations it holds return to the lease unless spent.
pub struct Plan {
    day: NaiveDate,
    jobs: Vec<Vec<Admission>>,
}

/// Per submission, what the commit's check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    /// Over the daily quota.
    Refused,
    /// A lease it spent from was gone: try again.
    Retry,
}

pub struct Checked {
    pub verdicts: Vec<Verdict>,
    dead: HashSet<BudgetKey>,
}

impl Plan {
    /// The day the quota (and `emails_sent`) is counted on.
    pub fn day(&self) -> NaiveDate {
        self.day
    }

    /// Settles the reservations after the commit: spent for admitted
    /// submissions of a `committed` transaction; lost for dead leases, and
    /// all of them when the commit's outcome is `unknown`; else returned.
    pub fn finish(self, checked: Option<&Checked>, committed: bool, unknown: bool) {
        for (j, job) in self.jobs.into_iter().enumerate() {
            let admitted =
                committed && checked.is_some_and(|c| c.verdicts.get(j) == Some(&Verdict::Admitted));
            for a in job {
                let Admission::Leased(r) = a else { continue };
                if admitted {
                    r.spend();
                } else if unknown || checked.is_some_and(|c| c.dead.contains(r.key())) {
                    r.lose();
                }
            }
        }
    }
}

/// Reserves each submission's messages from this node's leases, asking for
/// grants (one short transaction) where they do not cover them; `exact`
/// decides every one under the budget's lock instead.
pub fn prepare(
    conn: &mut PgConnection,
    budgets: &Budgets,
    chunk: i64,
    jobs: &[Vec<Need>],
    exact: bool,
) -> Plan {
    let day = Utc::now().date_naive();
    let mut planned: Vec<Vec<Option<Admission>>> = Vec::with_capacity(jobs.len());
    let (mut requests, mut slots) = (Vec::new(), Vec::new());
    for (j, needs) in jobs.iter().enumerate() {
        let mut row = Vec::with_capacity(needs.len());
        for (i, need) in needs.iter().enumerate() {
            let k = key(need.tenant, day);
            row.push(match exact {
                true => Some(Admission::Exact(*need)),
                false => match budgets.reserve(&k, need.limit, need.n) {
                    Reserve::Held(r) => Some(Admission::Leased(r)),
                    Reserve::Closed => Some(Admission::Exact(*need)),
                    Reserve::Grant => {
                        requests.push(GrantRequest {
                            key: k,
                            limit: need.limit,
                            need: need.n,
                            chunk,
                            ends_at: ends_at(day),
                        });
                        slots.push((j, i));
                        None
                    }
                },
            });
        }
        planned.push(row);
    }
    if !requests.is_empty() {
        let answers = budgets
            .grant(conn, requests, &mut |c, keys| used(c, day, keys))
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "quota grant failed; deciding exactly");
                Vec::new()
            });
        let mut answers = answers.into_iter();
        for (j, i) in slots {
            let need = jobs[j][i];
            planned[j][i] = Some(match answers.next() {
                Some(Granted::Held(r)) => Admission::Leased(r),
                _ => Admission::Exact(need),
            });
        }
    }
    Plan {
        day,
        jobs: planned
            .into_iter()
            .map(|row| row.into_iter().flatten().collect())
            .collect(),
    }
}

fn used(
    conn: &mut PgConnection,
    day: NaiveDate,
    keys: &[BudgetKey],
) -> QueryResult<HashMap<BudgetKey, i64>> {
    let tenants: Vec<Uuid> = keys.iter().map(|k| k.tenant_id).collect();
    let sent = usage::sent(conn, day, &tenants)?;
    Ok(keys
        .iter()
        .map(|k| (k.clone(), sent.get(&k.tenant_id).copied().unwrap_or(0)))
        .collect())
}

/// Inside the commit, before it writes or locks anything else: locks the
/// budgets decided exactly (their rows, in key order), then holds the
/// leases spent from (`FOR KEY SHARE`), and gives each submission its verdict.
pub fn check(conn: &mut PgConnection, budgets: &Budgets, plan: &Plan) -> QueryResult<Checked> {
    let day = plan.day;
    let mut exact: BTreeMap<Uuid, i64> = BTreeMap::new();
    for job in &plan.jobs {
        for a in job {
            if let Admission::Exact(n) = a {
                exact.insert(n.tenant, 0);
            }
        }
    }
    if !exact.is_empty() {
        let keys: Vec<(BudgetKey, DateTime<Utc>)> =
            exact.keys().map(|t| (key(*t, day), ends_at(day))).collect();
        let leased = Budgets::lock_exact(conn, &keys)?;
        let tenants: Vec<Uuid> = exact.keys().copied().collect();
        let sent = usage::sent(conn, day, &tenants)?;
        for (t, count) in exact.iter_mut() {
            *count =
                sent.get(t).copied().unwrap_or(0) + leased.get(&key(*t, day)).copied().unwrap_or(0);
        }
    }
    let held: Vec<&Reservation> = plan
        .jobs
        .iter()
        .flatten()
        .filter_map(|a| match a {
            Admission::Leased(r) => Some(r),
            Admission::Exact(_) => None,
        })
        .collect();
    let live = budgets.hold(conn, &held)?;
    let dead: HashSet<BudgetKey> = held
        .iter()
        .map(|r| r.key())
        .filter(|k| !live.contains(*k))
        .cloned()
        .collect();
    let verdicts = plan
        .jobs
        .iter()
        .map(|job| {
            let retry = job.iter().any(|a| match a {
                Admission::Leased(r) => dead.contains(r.key()),
                Admission::Exact(_) => false,
            });
            if retry {
                return Verdict::Retry;
            }
            let fits = job.iter().all(|a| match a {
                Admission::Exact(n) => exact.get(&n.tenant).copied().unwrap_or(0) + n.n <= n.limit,
                Admission::Leased(_) => true,
            });
            if !fits {
                return Verdict::Refused;
            }
            for a in job {
                if let Admission::Exact(n) = a {
                    *exact.entry(n.tenant).or_default() += n.n;
                }
            }
            Verdict::Admitted
        })
        .collect();
    Ok(Checked { verdicts, dead })
}
