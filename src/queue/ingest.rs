//! Write coalescing (DESIGN §9): concurrent sends are grouped by a few writer
//! tasks into one multi-row INSERT and one COMMIT. Each caller is answered only
//! after the COMMIT that holds its rows, so a 202 always means "durable".
//!
//! No timer is involved: while a writer commits, new requests queue up in the
//! channel and the next writer takes all of them at once, so batches grow with
//! load and a lone request is written immediately.

use std::sync::Arc;

use diesel::prelude::*;
use diesel::PgConnection;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::db::PgPool;
use crate::emails::model::{self, NewEmail};
use crate::error::{AppError, AppResult};

/// Work a request asks for inside the enqueue transaction, after its rows are
/// known to be valid (e.g. the daily quota check).
pub type Precheck = Box<dyn Fn(&mut PgConnection) -> AppResult<()> + Send>;

struct Job {
    rows: Vec<NewEmail>,
    precheck: Option<Precheck>,
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

    /// Queues `rows` (one request's messages, all or nothing) and resolves
    /// after their COMMIT.
    pub async fn submit(&self, rows: Vec<NewEmail>, precheck: Option<Precheck>) -> AppResult<()> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job {
                rows,
                precheck,
                done,
            })
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
            let mut rows = jobs[0].rows.len();
            while rows < max_rows {
                match rx.try_recv() {
                    Ok(job) => {
                        rows += job.rows.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
        }
        let pool = pool.clone();
        let outcome = tokio::task::spawn_blocking(move || commit_jobs(&pool, jobs)).await;
        if let Err(e) = outcome {
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
    let has_prechecks = jobs.iter().any(|j| j.precheck.is_some());
    if jobs.len() > 1 && !has_prechecks {
        let result = conn.transaction(|c| {
            for job in &jobs {
                model::insert_with_events(c, &job.rows)?;
            }
            notify(c)
        });
        if result.is_ok() {
            for job in jobs {
                let _ = job.done.send(Ok(()));
            }
            return;
        }
    } else if jobs.len() > 1 {
        // Prechecks (quota) may refuse single jobs: run each in a savepoint
        // inside one transaction so the others still share the COMMIT.
        let mut results: Vec<AppResult<()>> = Vec::with_capacity(jobs.len());
        let committed = conn.transaction::<_, diesel::result::Error, _>(|c| {
            for job in &jobs {
                results.push(c.transaction::<_, AppError, _>(|c| run_job(c, job)));
            }
            notify(c)
        });
        if committed.is_ok() {
            for (job, r) in jobs.into_iter().zip(results) {
                let _ = job.done.send(r);
            }
            return;
        }
        // The outer COMMIT failed, so nothing was written: retry singly below.
    }
    for job in jobs {
        let r = conn.transaction::<_, AppError, _>(|c| {
            run_job(c, &job)?;
            notify(c)?;
            Ok(())
        });
        let _ = job.done.send(r);
    }
}

fn run_job(conn: &mut PgConnection, job: &Job) -> AppResult<()> {
    if let Some(check) = &job.precheck {
        check(conn)?;
    }
    model::insert_with_events(conn, &job.rows)?;
    Ok(())
}

fn notify(conn: &mut PgConnection) -> QueryResult<()> {
    diesel::sql_query(format!("NOTIFY {}", super::CHANNEL))
        .execute(conn)
        .map(|_| ())
}
