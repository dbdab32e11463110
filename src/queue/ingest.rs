//! Write coalescing (DESIGN §9): concurrent sends are grouped by a few writer
//! tasks into one multi-row INSERT and one COMMIT. Each caller is answered only
//! after the COMMIT that holds its rows, so a 202 always means "durable".
//!
//! No timer is involved: while a writer commits, new requests queue up and
//! the next free writer takes all of them at once (any writer takes any
//! submission, whatever its tenants), so batches grow with load and a lone
//! request is written immediately.
//!
//! The daily quota is taken off the commit path (`crate::limits::quota`):
//! before its commit a writer reserves each submission's messages from this
//! node's leases, and the commit only holds those leases `FOR KEY SHARE`; a
//! tenant's budget row is locked only by grants and, at the boundary, by
//! exact decisions, in key order. So commits of many tenants share one
//! transaction and do not wait for each other. `emails_sent` is counted in
//! the same transaction, on the writer's own usage shard.
//!
//! Workers are woken after the COMMIT, not inside it: in-process through
//! [`Ingestor::committed`], other nodes by one coalesced `NOTIFY` (its own
//! tiny transaction at most every [`NOTIFY_EVERY`]), which keeps NOTIFY's
//! commit-time global lock off the ingest commits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel::prelude::*;
use diesel::PgConnection;
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use uuid::Uuid;

use crate::cluster::Budgets;
use crate::db::PgPool;
use crate::emails::model::{self, NewEmail};
use crate::error::{AppError, AppResult};
use crate::limits::quota::{self, Checked, Need, Plan, Verdict};
use crate::queue::model as queue_db;
use crate::usage::model::{self as usage, Counters};

/// One request's messages (all or nothing) and the daily quotas that apply
/// to their tenants (`tenant → emails_per_day`; absent = unlimited).
pub struct Submission {
    pub rows: Vec<NewEmail>,
    pub quotas: BTreeMap<Uuid, i64>,
}

impl Submission {
    /// Its messages per quota-bound tenant.
    fn needs(&self) -> Vec<Need> {
        let mut count: BTreeMap<Uuid, i64> = BTreeMap::new();
        for r in &self.rows {
            if self.quotas.contains_key(&r.tenant_id) {
                *count.entry(r.tenant_id).or_default() += 1;
            }
        }
        count
            .into_iter()
            .map(|(tenant, n)| Need {
                tenant,
                n,
                limit: self.quotas.get(&tenant).copied().unwrap_or(0),
            })
            .collect()
    }
}

struct Job {
    submission: Submission,
    done: oneshot::Sender<AppResult<()>>,
}

/// The shortest gap between two cross-node `NOTIFY`s.
pub const NOTIFY_EVERY: Duration = Duration::from_millis(5);

/// Commit attempts of one submission whose lease went meanwhile; the last
/// one decides exactly, without leases.
const ROUNDS: usize = 3;

/// This node's leases of the daily quota and the size of a grant.
#[derive(Clone)]
struct Quota {
    budgets: Budgets,
    chunk: i64,
}

impl Quota {
    fn plan(&self, conn: &mut PgConnection, subs: &[&Submission], exact: bool) -> Plan {
        let needs: Vec<Vec<Need>> = subs.iter().map(|s| s.needs()).collect();
        quota::prepare(conn, &self.budgets, self.chunk, &needs, exact)
    }
}

#[derive(Clone)]
pub struct Ingestor {
    queue: mpsc::Sender<Job>,
    committed: Arc<watch::Sender<u64>>,
    quota: Quota,
}

impl Ingestor {
    /// Starts `writers` writer tasks on one shared queue; each commits at
    /// most `max_rows` rows at once, spending the daily quota from
    /// `budgets`' leases granted `chunk` messages at a time. Also starts the
    /// coalesced NOTIFY task.
    pub fn start(
        pool: PgPool,
        writers: usize,
        max_rows: usize,
        budgets: Budgets,
        chunk: u32,
    ) -> Ingestor {
        let max_rows = max_rows.max(1);
        let writers = writers.max(1);
        let (committed_tx, committed) = watch::channel(0u64);
        let committed_tx = Arc::new(committed_tx);
        let quota = Quota {
            budgets,
            chunk: i64::from(chunk.max(1)),
        };
        let (queue, rx) = mpsc::channel::<Job>(max_rows * 4 * writers);
        let rx = Arc::new(Mutex::new(rx));
        for shard in usage::spread_shards(writers) {
            tokio::spawn(writer(
                pool.clone(),
                rx.clone(),
                max_rows,
                committed_tx.clone(),
                quota.clone(),
                shard,
            ));
        }
        tokio::spawn(notifier(pool, committed));
        Ingestor {
            queue,
            committed: committed_tx,
            quota,
        }
    }

    /// Bumped after every COMMIT that queued mail: a worker in this process
    /// wakes on it without a round trip through Postgres.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Mail was committed outside the writers (a send with an Idempotency-Key
    /// has its own transaction): wake the workers as the writers do.
    pub fn mark_committed(&self) {
        self.committed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Queues one submission and resolves after its COMMIT.
    pub async fn submit(&self, submission: Submission) -> AppResult<()> {
        let (done, wait) = oneshot::channel();
        self.queue
            .send(Job { submission, done })
            .await
            .map_err(|_| AppError::Unavailable("ingest writers stopped".into()))?;
        wait.await
            .map_err(|_| AppError::Unavailable("ingest writer dropped the request".into()))?
    }

    /// Writes one submission in a transaction of its own around `body` (a
    /// send with an Idempotency-Key): `body` runs inside the transaction and
    /// calls `write` to write the submission (an error — over quota — rolls
    /// everything back). Retried when a lease went meanwhile.
    pub fn write_alone<T>(
        &self,
        conn: &mut PgConnection,
        sub: &Submission,
        mut body: impl FnMut(
            &mut PgConnection,
            &mut dyn FnMut(&mut PgConnection) -> AppResult<()>,
        ) -> AppResult<T>,
    ) -> AppResult<T> {
        let shard = usage::pick_shard();
        for round in 0..ROUNDS {
            let plan = self.quota.plan(conn, &[sub], round + 1 == ROUNDS);
            let mut checked: Option<Checked> = None;
            let mut reached = false;
            let r = conn.transaction(|c| {
                let out = body(c, &mut |c| {
                    let w = write_jobs(c, &self.quota.budgets, &[sub], &plan, shard)?;
                    let verdict = w.verdicts.first().copied();
                    checked = Some(w);
                    match verdict {
                        Some(Verdict::Admitted) => Ok(()),
                        Some(Verdict::Retry) => {
                            Err(AppError::Unavailable("quota lease lost".into()))
                        }
                        _ => Err(quota_exceeded()),
                    }
                })?;
                reached = true;
                Ok(out)
            });
            let retry = checked
                .as_ref()
                .is_some_and(|c| c.verdicts.first() == Some(&Verdict::Retry));
            plan.finish(checked.as_ref(), r.is_ok(), r.is_err() && reached);
            if retry && round + 1 < ROUNDS {
                continue;
            }
            return r;
        }
        Err(AppError::Unavailable("quota lease lost".into()))
    }
}

async fn writer(
    pool: PgPool,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    max_rows: usize,
    committed: Arc<watch::Sender<u64>>,
    quota: Quota,
    shard: i16,
) {
    loop {
        let jobs = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut rows = first.submission.rows.len();
            let mut jobs = vec![first];
            while rows < max_rows {
                match rx.try_recv() {
                    Ok(job) => {
                        rows += job.submission.rows.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        let (pool, quota) = (pool.clone(), quota.clone());
        match tokio::task::spawn_blocking(move || commit_jobs(&pool, &quota, jobs, shard)).await {
            Ok(true) => committed.send_modify(|n| *n = n.wrapping_add(1)),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "ingest writer task failed"),
        }
    }
}

/// Tells workers on other nodes that mail was committed: one `NOTIFY` in its
/// own transaction per burst of commits, at most every [`NOTIFY_EVERY`].
/// A lost NOTIFY costs at most the workers' poll interval.
async fn notifier(pool: PgPool, mut committed: watch::Receiver<u64>) {
    while committed.changed().await.is_ok() {
        committed.borrow_and_update();
        let r = crate::db::run(&pool, |conn| {
            diesel::sql_query(format!("NOTIFY {}", super::CHANNEL)).execute(conn)?;
            Ok(())
        })
        .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "NOTIFY after ingest failed; workers will poll");
        }
        tokio::time::sleep(NOTIFY_EVERY).await;
    }
}

/// Commits all jobs in one transaction; if that fails, each job is retried
/// alone so one bad request cannot fail its neighbours. True when any mail
/// was committed.
fn commit_jobs(pool: &PgPool, quota: &Quota, jobs: Vec<Job>, shard: i16) -> bool {
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
pub fn quota_exceeded() -> AppError {
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
pub fn write_jobs(
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
    Ok(checked)
}
