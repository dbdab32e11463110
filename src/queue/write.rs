//! The commits of the ingest writers (`ingest`): one transaction for a
//! batch of submissions of any tenants, each admitted whole or not at all
//! against its tenants' daily quotas, and what to do when it fails.

use std::collections::BTreeMap;

use chrono::Utc;
use diesel::prelude::*;
use diesel::PgConnection;
use uuid::Uuid;

use super::ingest::{Job, Quota, Submission, ROUNDS};
use crate::cluster::Budgets;
use crate::db::PgPool;
use crate::emails::model::{self, NewEmail};
use crate::error::AppError;
use crate::limits::quota::{self, Checked, Plan, Verdict};
use crate::queue::model as queue_db;
use crate::usage::model::{self as usage, Counters};
use crate::usage::streams as usage_streams;

/// Commits all jobs in one transaction; if that fails, each job is retried
/// alone so one bad request cannot fail its neighbours. True when any mail
/// was committed.
pub(super) fn commit_jobs(pool: &PgPool, quota: &Quota, jobs: Vec<Job>, shard: i16) -> bool {
    let mut conn = match pool.get() {
        Ok(c) => c,
        Err(e) => {
            let why = format!("database pool: {e}");
            for job in jobs {
                let _ = job.done.send(Err(AppError::Unavailable(why.clone())));
            }
            return false;
        }
    };
    let (failed, committed) = commit_on(&mut conn, quota, jobs, shard);
    // A connection that died under us must not serve the next batch.
    crate::db::release(conn, failed);
    committed
}

/// [`commit_jobs`] on one connection: (a transaction failed, mail committed).
/// Submissions whose lease went meanwhile are committed again, at most
/// [`ROUNDS`] times, the last time decided exactly.
fn commit_on(
    conn: &mut PgConnection,
    quota: &Quota,
    mut jobs: Vec<Job>,
    shard: i16,
) -> (bool, bool) {
    let (mut failed, mut any) = (false, false);
    for round in 0..ROUNDS {
        if jobs.is_empty() {
            break;
        }
        let (plan, result, reached) = {
            let subs: Vec<&Submission> = jobs.iter().map(|j| &j.submission).collect();
            let plan = quota.plan(conn, &subs, round + 1 == ROUNDS);
            let mut reached = false;
            let r = conn.transaction(|c| {
                let w = write_jobs(c, &quota.budgets, &subs, &plan, shard)?;
                reached = true;
                Ok::<_, diesel::result::Error>(w)
            });
            (plan, r, reached)
        };
        match result {
            Ok(checked) => {
                plan.finish(Some(&checked), true, false);
                let mut again = Vec::new();
                for (job, verdict) in jobs.into_iter().zip(checked.verdicts) {
                    match verdict {
                        Verdict::Admitted => {
                            any = true;
                            let _ = job.done.send(Ok(()));
                        }
                        Verdict::Refused => {
                            let _ = job.done.send(Err(quota_exceeded()));
                        }
                        Verdict::Retry => again.push(job),
                    }
                }
                jobs = again;
            }
            Err(e) => {
                plan.finish(None, false, reached);
                failed = true;
                if jobs.len() > 1 {
                    for job in jobs {
                        let (f, a) = commit_on(conn, quota, vec![job], shard);
                        failed |= f;
                        any |= a;
                    }
                } else if let Some(job) = jobs.pop() {
                    let _ = job.done.send(Err(e.into()));
                }
                return (failed, any);
            }
        }
    }
    for job in jobs {
        let _ = job
            .done
            .send(Err(AppError::Unavailable("quota lease lost".into())));
    }
    (failed, any)
}

/// 429 until the next UTC midnight, when the daily counters start over.
pub(super) fn quota_exceeded() -> AppError {
    crate::metrics::limited("daily_quota_exceeded");
    let now = Utc::now();
    let midnight = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .map(|m| m.and_utc())
        .unwrap_or(now);
    AppError::TooManyRequests {
        code: "daily_quota_exceeded",
        detail: "The tenant's daily e-mail quota is used up.".into(),
        retry_after_secs: (midnight - now).num_seconds().max(1) as u64,
    }
}

/// Inside the caller's transaction: admits each submission whole or not at
/// all against its tenants' daily quotas ([`quota::check`], which locks
/// first), inserts the admitted messages with their queue rows and
/// `email.queued` events, and counts them in `usage_daily` on `shard`.
/// Returns, per submission, its verdict.
pub(super) fn write_jobs(
    conn: &mut PgConnection,
    budgets: &Budgets,
    subs: &[&Submission],
    plan: &Plan,
    shard: i16,
) -> QueryResult<Checked> {
    let checked = quota::check(conn, budgets, plan)?;
    let rows: Vec<&NewEmail> = subs
        .iter()
        .zip(&checked.verdicts)
        .filter(|(_, v)| **v == Verdict::Admitted)
        .flat_map(|(s, _)| s.rows.iter())
        .collect();
    if rows.is_empty() {
        return Ok(checked);
    }
    model::insert_with_events(conn, &rows)?;
    // Recipients recorded, suppressed ones refused (issue 13); a message with
    // nobody left to send to is `suppressed` and never queued.
    let checked_rcpts = crate::suppressions::check::at_ingest(conn, &rows)?;
    let queued: Vec<&NewEmail> = rows
        .iter()
        .copied()
        .filter(|r| !checked_rcpts.all_suppressed.contains(&(r.tenant_id, r.id)))
        .collect();
    queue_db::insert(conn, &queued)?;
    crate::metrics::ingest_batch(rows.len());
    let mut counts: BTreeMap<Uuid, Counters> = BTreeMap::new();
    for r in &rows {
        counts.entry(r.tenant_id).or_default().emails_sent += 1;
    }
    for (t, n) in &checked_rcpts.per_tenant {
        counts.entry(*t).or_default().emails_suppressed += n;
    }
    usage::add(conn, plan.day(), shard, &counts)?;
    let by_stream = usage_streams::sent(rows.iter().map(|r| (r.tenant_id, r.stream.as_str())));
    usage_streams::add(conn, plan.day(), shard, &by_stream)?;
    Ok(checked)
}
