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

use diesel::prelude::*;
use diesel::PgConnection;
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use uuid::Uuid;

use super::write;
use crate::cluster::Budgets;
use crate::db::PgPool;
use crate::emails::model::NewEmail;
use crate::error::{AppError, AppResult};
use crate::limits::quota::{self, Checked, Need, Plan, Verdict};
use crate::usage::model as usage;

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

pub(super) struct Job {
    pub(super) submission: Submission,
    pub(super) done: oneshot::Sender<AppResult<()>>,
}

/// The shortest gap between two cross-node `NOTIFY`s.
pub const NOTIFY_EVERY: Duration = Duration::from_millis(5);

/// Commit attempts of one submission whose lease went meanwhile; the last
/// one decides exactly, without leases.
pub(super) const ROUNDS: usize = 3;

/// This node's leases of the daily quota and the size of a grant.
#[derive(Clone)]
pub(super) struct Quota {
    pub(super) budgets: Budgets,
    chunk: i64,
}

impl Quota {
    pub(super) fn plan(&self, conn: &mut PgConnection, subs: &[&Submission], exact: bool) -> Plan {
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
                    let w = write::write_jobs(c, &self.quota.budgets, &[sub], &plan, shard)?;
                    let verdict = w.verdicts.first().copied();
                    checked = Some(w);
                    match verdict {
                        Some(Verdict::Admitted) => Ok(()),
                        Some(Verdict::Retry) => {
                            Err(AppError::Unavailable("quota lease lost".into()))
                        }
                        _ => Err(write::quota_exceeded()),
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
        match tokio::task::spawn_blocking(move || write::commit_jobs(&pool, &quota, jobs, shard))
            .await
        {
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
