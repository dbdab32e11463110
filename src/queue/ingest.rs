//! Write coalescing (DESIGN §9): concurrent sends are grouped by a few writer
//! tasks into one multi-row INSERT and one COMMIT. Each caller is answered only
//! after the COMMIT that holds its rows, so a 202 always means "durable".
//!
//! No timer is involved: while a writer commits, new requests queue up in the
//! channel and the next writer takes all of them at once, so batches grow with
//! load and a lone request is written immediately.
//!
//! The same transaction enforces the daily quota exactly (DESIGN §6) and
//! counts `emails_sent`: see [`write_jobs`].
//!
//! Writers are partitioned by tenant (a submission goes to the writer of its
//! first tenant), so one tenant's commits never wait for another writer's
//! quota lock. Workers are woken after the COMMIT, not inside it: in-process
//! through [`Ingestor::committed`], other nodes by one coalesced `NOTIFY`
//! (its own tiny transaction at most every [`NOTIFY_EVERY`]), which keeps
//! NOTIFY's commit-time global lock off the ingest commits.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use diesel::prelude::*;
use diesel::PgConnection;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::db::PgPool;
use crate::emails::model::{self, NewEmail};
use crate::error::{AppError, AppResult};
use crate::queue::model as queue_db;
use crate::usage::model::{self as usage, Counters};

/// One request's messages (all or nothing) and the daily quotas that apply
/// to their tenants (`tenant → emails_per_day`; absent = unlimited).
pub struct Submission {
    pub rows: Vec<NewEmail>,
    pub quotas: BTreeMap<Uuid, i64>,
}

struct Job {
    submission: Submission,
    done: oneshot::Sender<AppResult<()>>,
}

/// The shortest gap between two cross-node `NOTIFY`s.
pub const NOTIFY_EVERY: Duration = Duration::from_millis(5);

#[derive(Clone)]
pub struct Ingestor {
    writers: Vec<mpsc::Sender<Job>>,
    committed: std::sync::Arc<watch::Sender<u64>>,
}

impl Ingestor {
    /// Starts `writers` writer tasks; each commits at most `max_rows` rows at
    /// once. Also starts the coalesced NOTIFY task.
    pub fn start(pool: PgPool, writers: usize, max_rows: usize) -> Ingestor {
        let max_rows = max_rows.max(1);
        let (committed_tx, committed) = watch::channel(0u64);
        let committed_tx = std::sync::Arc::new(committed_tx);
        let senders = (0..writers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel::<Job>(max_rows * 4);
                tokio::spawn(writer(pool.clone(), rx, max_rows, committed_tx.clone()));
                tx
            })
            .collect();
        tokio::spawn(notifier(pool, committed));
        Ingestor {
            writers: senders,
            committed: committed_tx,
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
        let writer = &self.writers[self.partition(&submission)];
        writer
            .send(Job { submission, done })
            .await
            .map_err(|_| AppError::Unavailable("ingest writers stopped".into()))?;
        wait.await
            .map_err(|_| AppError::Unavailable("ingest writer dropped the request".into()))?
    }

    fn partition(&self, s: &Submission) -> usize {
        let Some(first) = s.rows.first() else {
            return 0;
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        first.tenant_id.hash(&mut h);
        (h.finish() % self.writers.len() as u64) as usize
    }
}

async fn writer(
    pool: PgPool,
    mut rx: mpsc::Receiver<Job>,
    max_rows: usize,
    committed: std::sync::Arc<watch::Sender<u64>>,
) {
    // Each writer adds its counters to its own shard.
    let shard = usage::pick_shard();
    while let Some(first) = rx.recv().await {
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
        let pool = pool.clone();
        match tokio::task::spawn_blocking(move || commit_jobs(&pool, jobs, shard)).await {
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
fn commit_jobs(pool: &PgPool, jobs: Vec<Job>, shard: i16) -> bool {
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
    let (failed, committed) = commit_on(&mut conn, jobs, shard);
    // A connection that died under us must not serve the next batch.
    crate::db::release(conn, failed);
    committed
}

/// [`commit_jobs`] on one connection: (a transaction failed, mail committed).
fn commit_on(conn: &mut PgConnection, jobs: Vec<Job>, shard: i16) -> (bool, bool) {
    if jobs.len() > 1 {
        let subs: Vec<&Submission> = jobs.iter().map(|j| &j.submission).collect();
        if let Ok(admitted) = conn.transaction(|c| write_jobs(c, &subs, shard)) {
            let any = admitted.iter().any(|ok| *ok);
            for (job, ok) in jobs.into_iter().zip(admitted) {
                let _ = job
                    .done
                    .send(if ok { Ok(()) } else { Err(quota_exceeded()) });
            }
            return (false, any);
        }
    }
    let (mut failed, mut any) = (false, false);
    for job in jobs {
        let r = conn.transaction(|c| write_jobs(c, &[&job.submission], shard));
        failed |= r.is_err();
        let _ = job.done.send(match r {
            Ok(admitted) if admitted.first() == Some(&true) => {
                any = true;
                Ok(())
            }
            Ok(_) => Err(quota_exceeded()),
            Err(e) => Err(e.into()),
        });
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
/// all against its tenants' daily quotas (their quota rows locked first, in
/// tenant order, so the quota holds exactly across nodes), inserts the
/// admitted messages with their queue rows and `email.queued` events, and
/// counts them in `usage_daily` (quota tenants on shard 0, the rest on
/// `shard`). Returns, per submission, whether it was admitted.
pub fn write_jobs(
    conn: &mut PgConnection,
    subs: &[&Submission],
    shard: i16,
) -> QueryResult<Vec<bool>> {
    let day: NaiveDate = Utc::now().date_naive();
    let quota_tenants: Vec<Uuid> = subs.iter().flat_map(|s| s.quotas.keys().copied()).collect();
    let mut sent = usage::lock_sent(conn, day, &quota_tenants)?;
    let mut admitted = Vec::with_capacity(subs.len());
    for s in subs {
        let mut need: BTreeMap<Uuid, i64> = BTreeMap::new();
        for r in &s.rows {
            *need.entry(r.tenant_id).or_default() += 1;
        }
        let fits = need.iter().all(|(t, n)| match s.quotas.get(t) {
            Some(limit) => sent.get(t).copied().unwrap_or(0) + n <= *limit,
            None => true,
        });
        if fits {
            for (t, n) in &need {
                if let Some(v) = sent.get_mut(t) {
                    *v += n;
                }
            }
        }
        admitted.push(fits);
    }
    let rows: Vec<&NewEmail> = subs
        .iter()
        .zip(&admitted)
        .filter(|(_, ok)| **ok)
        .flat_map(|(s, _)| s.rows.iter())
        .collect();
    if rows.is_empty() {
        return Ok(admitted);
    }
    model::insert_with_events(conn, &rows)?;
    // Recipients recorded, suppressed ones refused (issue 13); a message with
    // nobody left to send to is `suppressed` and never queued.
    let checked = crate::suppressions::check::at_ingest(conn, &rows)?;
    let queued: Vec<&NewEmail> = rows
        .iter()
        .copied()
        .filter(|r| !checked.all_suppressed.contains(&(r.tenant_id, r.id)))
        .collect();
    queue_db::insert(conn, &queued)?;
    crate::metrics::ingest_batch(rows.len());
    let (mut quota, mut other): (BTreeMap<Uuid, Counters>, BTreeMap<Uuid, Counters>) =
        Default::default();
    for r in &rows {
        let to = if sent.contains_key(&r.tenant_id) {
            &mut quota
        } else {
            &mut other
        };
        to.entry(r.tenant_id).or_default().emails_sent += 1;
    }
    for (t, n) in &checked.per_tenant {
        other.entry(*t).or_default().emails_suppressed += n;
    }
    usage::add(conn, day, 0, &quota)?;
    usage::add(conn, day, shard, &other)?;
    Ok(admitted)
}
