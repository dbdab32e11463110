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

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use diesel::prelude::*;
use diesel::PgConnection;
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use crate::db::PgPool;
use crate::emails::model::{self, NewEmail};
use crate::error::{AppError, AppResult};
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

#[derive(Clone)]
pub struct Ingestor {
    tx: mpsc::Sender<Job>,
}

impl Ingestor {
    /// Starts `writers` writer tasks; each commits at most `max_rows` rows at once.
    pub fn start(pool: PgPool, writers: usize, max_rows: usize) -> Ingestor {
        let (tx, rx) = mpsc::channel::<Job>(max_rows.max(1) * writers.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers.max(1) {
            tokio::spawn(writer(pool.clone(), rx.clone(), max_rows.max(1)));
        }
        Ingestor { tx }
    }

    /// Queues one submission and resolves after its COMMIT.
    pub async fn submit(&self, submission: Submission) -> AppResult<()> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job { submission, done })
            .await
            .map_err(|_| AppError::Unavailable("ingest writers stopped".into()))?;
        wait.await
            .map_err(|_| AppError::Unavailable("ingest writer dropped the request".into()))?
    }
}

async fn writer(pool: PgPool, rx: Arc<Mutex<mpsc::Receiver<Job>>>, max_rows: usize) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(job) => jobs.push(job),
                None => return,
            }
            let mut rows = jobs[0].submission.rows.len();
            while rows < max_rows {
                match rx.try_recv() {
                    Ok(job) => {
                        rows += job.submission.rows.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
        }
        let pool = pool.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || commit_jobs(&pool, jobs)).await {
            tracing::error!(error = %e, "ingest writer task failed");
        }
    }
}

/// Commits all jobs in one transaction; if that fails, each job is retried
/// alone so one bad request cannot fail its neighbours.
fn commit_jobs(pool: &PgPool, jobs: Vec<Job>) {
    let mut conn = match pool.get() {
        Ok(c) => c,
        Err(e) => {
            let why = format!("database pool: {e}");
            for job in jobs {
                let _ = job.done.send(Err(AppError::Unavailable(why.clone())));
            }
            return;
        }
    };
    if jobs.len() > 1 {
        let subs: Vec<&Submission> = jobs.iter().map(|j| &j.submission).collect();
        if let Ok(admitted) = conn.transaction(|c| write_jobs(c, &subs)) {
            for (job, ok) in jobs.into_iter().zip(admitted) {
                let _ = job
                    .done
                    .send(if ok { Ok(()) } else { Err(quota_exceeded()) });
            }
            return;
        }
    }
    for job in jobs {
        let r = conn.transaction(|c| write_jobs(c, &[&job.submission]));
        let _ = job.done.send(match r {
            Ok(admitted) if admitted.first() == Some(&true) => Ok(()),
            Ok(_) => Err(quota_exceeded()),
            Err(e) => Err(e.into()),
        });
    }
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
/// all against its tenants' daily quotas (their usage rows locked, in tenant
/// order, so the quota holds exactly across nodes), inserts the admitted
/// messages with their `email.queued` events, counts them in `usage_daily`,
/// and NOTIFYs idle workers. Returns, per submission, whether it was admitted.
pub fn write_jobs(conn: &mut PgConnection, subs: &[&Submission]) -> QueryResult<Vec<bool>> {
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
    crate::metrics::ingest_batch(rows.len());
    let mut deltas: BTreeMap<Uuid, Counters> = BTreeMap::new();
    for r in &rows {
        deltas.entry(r.tenant_id).or_default().emails_sent += 1;
    }
    usage::add(conn, day, &deltas)?;
    diesel::sql_query(format!("NOTIFY {}", super::CHANNEL)).execute(conn)?;
    Ok(admitted)
}
