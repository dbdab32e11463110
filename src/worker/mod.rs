//! The delivery worker (DESIGN §5, issue 10), by what each part does:
//! - [`dispatch`]: the claim loop: fair claims (`queue::claim`) whenever
//!   in-flight slots and bytes are free, one task per message;
//! - [`send`]: one message: prepare (MIME, on its own failure path), pace,
//!   relay, and what the reply means;
//! - [`recorder`]: outcomes recorded as sends finish, batched, fenced;
//! - [`maintenance`]: lease heartbeat, reclaim of expired leases (and the cap
//!   on lost leases), held stragglers, purges;
//! - [`listen`]: the LISTEN thread that wakes the loop on other nodes' mail.
//!
//! Heartbeats, reclaims and outcome writes run on a pool of their own
//! (`worker.lease_pool_size`): were they queued behind API requests on the
//! main pool, a busy API would let leases lapse and mail go out twice.
//!
//! On shutdown the loop stops claiming, sends already started finish and are
//! recorded, messages not yet started go back to the queue.

mod dispatch;
mod inflight;
mod listen;
mod maintenance;
mod recorder;
mod relays;
mod send;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::crypto::Vault;
use crate::db::PgPool;
use crate::delivery::Transports;
use crate::emails::model::EmailRow;
use crate::limits::pacer::Pacer;
use crate::queue::retry::RetryPolicy;
use crate::webhooks::dispatcher;

pub use inflight::Summary;

/// Turns a claimed row into the bytes sent. Runs on the blocking pool; an
/// error or a panic fails that message alone.
pub type Prepare = Arc<dyn Fn(EmailRow) -> anyhow::Result<Vec<u8>> + Send + Sync>;

/// Test suite only (feature `test-hooks`): called with a message's id just
/// before it is handed to its transport, so a test can make a send panic.
#[cfg(feature = "test-hooks")]
pub type BeforeSend = Arc<dyn Fn(uuid::Uuid) + Send + Sync>;

/// How the worker is wired into its process.
#[derive(Clone)]
pub struct Options {
    /// In-process wake-ups (the ingestor's commits in `serve`), besides LISTEN.
    pub wake: Option<watch::Receiver<u64>>,
    pub prepare: Prepare,
    /// Cluster-wide `emails_per_second` on leased budgets (issue 27); `None`:
    /// per node (`limit / limits.nodes`).
    pub rates: Option<crate::cluster::rate::Rates>,
    #[cfg(feature = "test-hooks")]
    pub before_send: Option<BeforeSend>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            wake: None,
            prepare: Arc::new(crate::emails::mime::build),
            rates: None,
            #[cfg(feature = "test-hooks")]
            before_send: None,
        }
    }
}

/// A running worker; [`WorkerHandle::stop`] shuts it down gracefully.
pub struct WorkerHandle {
    shutdown: watch::Sender<bool>,
    dispatch: JoinHandle<Summary>,
    others: Vec<JoinHandle<()>>,
    helpers: Vec<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Stops claiming, waits up to `timeout` for the sends in flight and
    /// their outcomes, logs what happened, and returns it.
    pub async fn stop(self, timeout: Duration) -> Summary {
        let _ = self.shutdown.send(true);
        tracing::info!("worker: stopped claiming; finishing the sends in flight");
        let summary = match tokio::time::timeout(timeout, self.dispatch).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "worker: claim loop failed");
                Summary::default()
            }
            Err(_) => {
                tracing::warn!("worker: sends still in flight at the shutdown timeout; their leases will expire and be reclaimed");
                Summary::default()
            }
        };
        // The recorder ends once every sender of outcomes is gone: the
        // helpers hold one.
        for h in self.helpers {
            h.abort();
        }
        let _ = tokio::time::timeout(timeout, futures_util::future::join_all(self.others)).await;
        tracing::info!(
            finished = summary.finished,
            released = summary.released,
            "worker: stopped ({} in flight finished, {} released to the queue)",
            summary.finished,
            summary.released
        );
        summary
    }
}

#[derive(Clone)]
struct Ctx {
    pool: PgPool,
    /// Lease heartbeats, reclaims and outcome writes only.
    leases: PgPool,
    vault: Vault,
    transports: Arc<Transports>,
    settings: Arc<Settings>,
    retry: RetryPolicy,
    /// `delivery.mode = "mx"`: the RFC 5321 retry schedule instead (issue 16).
    mx_retry: Option<crate::queue::retry::Schedule>,
    pacer: Arc<Pacer>,
    prepare: Prepare,
    #[cfg(feature = "test-hooks")]
    before_send: Option<BeforeSend>,
    inflight: Arc<inflight::Inflight>,
    outcomes: mpsc::Sender<recorder::Done>,
    /// Bumped by maintenance when it made mail claimable (reclaim, resume).
    wake_local: Arc<watch::Sender<u64>>,
    /// DKIM signing with cached keys (issue 12).
    signer: crate::domains::signing::Signer,
    /// VERP return paths (issue 13); `None` if the master key is unusable.
    verp: Option<crate::bounces::token::VerpKeys>,
    /// The bounce domain per sending domain, cached (issue 13).
    return_paths: crate::bounces::return_paths::ReturnPaths,
    /// RFC 8058 links (issue 26); `None` when not configured.
    unsubscribe: Option<crate::unsubscribe::headers::Links>,
    /// Link and pixel rewriting (issue 29); `None` if the master key is unusable.
    tracking: Option<crate::tracking::host::Rewriter>,
}

/// Starts the worker role with default options (LISTEN wake-ups only).
pub fn spawn(settings: Arc<Settings>, pool: PgPool, vault: Vault) -> WorkerHandle {
    spawn_with(settings, pool, vault, Options::default())
}

/// Starts the worker role: the claim loop, the outcome recorder, the webhook
/// dispatcher, and the LISTEN, heartbeat and maintenance tasks.
pub fn spawn_with(
    settings: Arc<Settings>,
    pool: PgPool,
    vault: Vault,
    options: Options,
) -> WorkerHandle {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (listen_tx, listen_rx) = watch::channel(0u64);
    let (outbox_tx, outbox_rx) = watch::channel(0u64);
    let (local_tx, local_rx) = watch::channel(0u64);
    let w = &settings.worker;
    // MX site limits across the cluster (issue 27) on the node's budgets.
    let mx = settings.delivery.mode == crate::config::DeliveryMode::Mx;
    let shared = options.rates.as_ref().filter(|_| mx).map(|r| {
        crate::delivery::mx::SharedSites::new(
            r,
            settings.cluster.lease_secs,
            settings.delivery.mx.site_rate_window_secs,
            Duration::from_secs(settings.delivery.mx.slowdown_secs),
        )
    });
    let (done_tx, done_rx) = mpsc::channel(w.concurrency.max(1) * 2);
    let ctx = Ctx {
        retry: RetryPolicy {
            initial: Duration::from_millis(settings.delivery.retry_initial_ms),
            max: Duration::from_millis(settings.delivery.retry_max_ms),
        },
        mx_retry: (settings.delivery.mode == crate::config::DeliveryMode::Mx).then(|| {
            crate::queue::retry::Schedule::from_secs(&settings.delivery.mx.retry_schedule_secs)
        }),
        transports: Arc::new(Transports::from_settings_shared(&settings, shared.clone())),
        pacer: Arc::new(Pacer::new(settings.limits.nodes).with_rates(options.rates.clone())),
        prepare: options.prepare,
        #[cfg(feature = "test-hooks")]
        before_send: options.before_send,
        inflight: Arc::new(inflight::Inflight::new(w)),
        outcomes: done_tx,
        wake_local: Arc::new(local_tx),
        signer: crate::domains::signing::Signer::new(
            pool.clone(),
            vault.clone(),
            Duration::from_secs(settings.domains.cache_secs),
        ),
        verp: crate::bounces::token::VerpKeys::from_settings(&settings).ok(),
        return_paths: crate::bounces::return_paths::ReturnPaths::new(&settings, pool.clone()),
        unsubscribe: crate::unsubscribe::headers::Links::from_settings(&settings),
        tracking: crate::tracking::host::Rewriter::new(&settings, pool.clone()),
        leases: crate::db::build_pool_of(&settings.database, w.lease_pool_size),
        pool,
        vault,
        settings,
    };
    // The LISTEN thread ends by itself once every receiver of it is gone.
    listen::start(ctx.settings.database.url.clone(), listen_tx);
    let recorder = tokio::spawn(recorder::run(
        ctx.leases.clone(),
        ctx.inflight.clone(),
        done_rx,
        outbox_tx,
    ));
    let mut helpers = vec![
        tokio::spawn(maintenance::heartbeat(ctx.clone())),
        tokio::spawn(maintenance::reclaim(ctx.clone())),
        tokio::spawn(maintenance::housekeeping(ctx.clone())),
    ];
    helpers.extend(shared.as_ref().map(|s| s.spawn_renewer()));
    let mut wakes = vec![listen_rx.clone(), local_rx];
    wakes.extend(options.wake.clone());
    let dispatch = tokio::spawn(dispatch::run(ctx.clone(), wakes, shutdown_rx.clone()));
    let mut others = vec![recorder];
    // The webhook dispatcher runs with the worker role and stops with it. It
    // wakes on commits of new mail (their `email.queued` events) and on
    // recorded outcomes that wrote outbox rows, besides its own poll.
    let queue_wake = options.wake.unwrap_or(listen_rx);
    // Its caps per endpoint and tenant hold across the nodes (issue 27).
    let flight = options
        .rates
        .as_ref()
        .map(|r| crate::webhooks::shared::SharedFlight::new(r, ctx.settings.cluster.lease_secs));
    helpers.extend(flight.as_ref().map(|f| f.spawn_renewer()));
    match dispatcher::spawn_shared(
        ctx.settings.clone(),
        ctx.pool.clone(),
        ctx.vault.clone(),
        shutdown_rx,
        [queue_wake, outbox_rx],
        flight,
    ) {
        Ok(handle) => others.push(handle),
        Err(e) => tracing::error!(error = %format!("{e:#}"), "webhook dispatcher not started"),
    }
    drop(ctx);
    WorkerHandle {
        shutdown: shutdown_tx,
        dispatch,
        others,
        helpers,
    }
}

/// Resolves when `rx` sees a new value; never, once its sender is gone (a
/// closed channel must not turn a `select!` into a busy loop).
pub(crate) async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
