//! Database access: the r2d2 pools, the blocking-pool runner, embedded migrations.
//! Diesel is synchronous, so every query runs through [`run`] on the blocking
//! pool and never on a tokio worker thread.

pub mod pagination;
pub mod prepared;
pub mod schema;

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, ManageConnection, Pool, PooledConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::config::DatabaseSettings;
use crate::error::{AppError, AppResult};

pub type PgPool = Pool<Manager>;
pub type PgConn = PooledConnection<Manager>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// diesel's connection manager, plus a way to drop a connection that died
/// (see [`release`]). diesel marks a connection broken only when a failure
/// goes through its transaction bookkeeping; one that fails while preparing
/// a statement (every `sql_query`, every uncached query) after Postgres
/// restarted stayed in the pool and failed every caller it was handed to —
/// found by the Postgres drill.
///
/// One dead connection usually means the others in the pool died with it
/// (Postgres restarted or failed over): for [`SUSPECT_FOR`] after one is
/// found, every checkout pings its connection first, so the other stale ones
/// are replaced instead of each failing a request. Otherwise a checkout
/// costs nothing (no ping on the hot path).
#[derive(Debug)]
pub struct Manager {
    inner: ConnectionManager<PgConnection>,
    /// Until when (ms since the Unix epoch) checkouts ping.
    suspect_until: AtomicU64,
}

/// How long checkouts ping after a dead connection was found.
pub const SUSPECT_FOR: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

thread_local! {
    /// Set by [`release`] just around dropping a dead connection; read by
    /// `has_broken`, which r2d2 calls synchronously in that drop.
    static DEAD: Cell<bool> = const { Cell::new(false) };
}

impl ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<PgConnection, Self::Error> {
        self.inner.connect()
    }

    /// Called on every checkout: a ping only while suspect.
    fn is_valid(&self, conn: &mut PgConnection) -> Result<(), Self::Error> {
        if now_ms() < self.suspect_until.load(Ordering::Relaxed) {
            self.inner.is_valid(conn)
        } else {
            Ok(())
        }
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        if DEAD.with(Cell::get) {
            let until = now_ms().saturating_add(SUSPECT_FOR.as_millis() as u64);
            self.suspect_until.fetch_max(until, Ordering::Relaxed);
            return true;
        }
        self.inner.has_broken(conn)
    }
}

/// Returns a connection to the pool. After a failure (`failed`) it is pinged
/// first, and dropped instead of pooled when it no longer answers: the hot
/// path pays nothing, a dead connection fails one caller only.
pub fn release(mut conn: PgConn, failed: bool) {
    let dead = failed && conn.batch_execute("SELECT 1").is_err();
    if !dead {
        return;
    }
    DEAD.with(|d| d.set(true));
    drop(conn);
    DEAD.with(|d| d.set(false));
}

/// Builds the pool without connecting: the service starts (and answers 503 on
/// `/readyz`) even while the database is down.
pub fn build_pool(settings: &DatabaseSettings) -> PgPool {
    build_pool_of(settings, settings.pool_size)
}

/// A pool of `size` connections to the same database, apart from the main
/// one: the worker's lease pool (`worker.lease_pool_size`), which API load
/// on the main pool cannot starve.
pub fn build_pool_of(settings: &DatabaseSettings, size: u32) -> PgPool {
    let manager = Manager {
        inner: ConnectionManager::<PgConnection>::new(settings.url.expose()),
        suspect_until: AtomicU64::new(0),
    };
    Pool::builder()
        .max_size(size.max(1))
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(settings.connect_timeout_secs.max(1)))
        // `Manager::is_valid` pings only after a dead connection was found.
        .test_on_check_out(true)
        .build_unchecked(manager)
}

/// Runs `f` with a pooled connection on the blocking pool. A pool timeout is a
/// 503; a panic inside `f` is re-raised on the caller.
pub async fn run<T, F>(pool: &PgPool, f: F) -> AppResult<T>
where
    F: FnOnce(&mut PgConnection) -> AppResult<T> + Send + 'static,
    T: Send + 'static,
{
    let pool = pool.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut conn = pool
            .get()
            .map_err(|e| AppError::Unavailable(format!("database pool: {e}")))?;
        let result = f(&mut conn);
        release(conn, result.is_err());
        result
    })
    .await;
    match joined {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(AppError::internal("blocking task", e)),
    }
}

/// Applies pending migrations; returns the versions applied.
pub fn migrate(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| anyhow::anyhow!("running migrations: {e}"))?;
    Ok(applied.iter().map(|v| v.to_string()).collect())
}

/// True when every embedded migration has been applied.
pub fn is_migrated(conn: &mut PgConnection) -> bool {
    matches!(conn.has_pending_migration(MIGRATIONS), Ok(false))
}

/// Runs `job` every `period` (first after one period) until the handle is
/// aborted; a failed run is logged and retried at the next tick.
pub fn every<F, Fut>(
    period: Duration,
    what: &'static str,
    mut job: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = AppResult<()>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = job().await {
                tracing::warn!(error = %e, "{what}");
            }
        }
    })
}
