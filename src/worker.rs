//! The delivery worker (DESIGN §5): claim loops that lease due messages, send
//! them through the tenant's transport, and record every outcome; a LISTEN
//! thread that wakes idle loops the moment mail is committed; a maintenance
//! task that reclaims expired leases. On shutdown the loops stop claiming,
//! finish the sends in flight, and hand back what they had not started.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::stream::{self, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::{Secret, Settings, TlsMode};
use crate::crypto::Vault;
use crate::db::{self, PgPool};
use crate::delivery::{self, OutgoingMessage, RelayConfig, Transports};
use crate::domain::TenantId;
use crate::emails::mime;
use crate::emails::model::EmailRow;
use crate::limits::pacer::Pacer;
use crate::metrics;
use crate::queue::claim::{self, Outcome, Resolution};
use crate::queue::retry::RetryPolicy;
use crate::tenants::input::smtp_password_context;
use crate::tenants::model::{self as tenants_db, TenantRow};
use crate::webhooks::dispatcher;

/// A running worker; [`WorkerHandle::stop`] shuts it down gracefully.
pub struct WorkerHandle {
    shutdown: watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
    helpers: Vec<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Stops claiming, waits up to `timeout` for in-flight sends and their
    /// outcomes, then returns.
    pub async fn stop(self, timeout: Duration) {
        let _ = self.shutdown.send(true);
        let all = futures_util::future::join_all(self.loops);
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("worker did not stop within the shutdown timeout; leases will expire and be reclaimed");
        }
        for h in self.helpers {
            h.abort();
        }
    }
}

#[derive(Clone)]
struct Ctx {
    pool: PgPool,
    vault: Vault,
    transports: Arc<Transports>,
    settings: Arc<Settings>,
    retry: RetryPolicy,
    pacer: Arc<Pacer>,
    /// Bumped after outcomes that wrote webhook outbox rows: wakes the
    /// dispatcher now instead of at its next poll.
    outbox: Arc<watch::Sender<u64>>,
}

/// What the worker needs of a tenant for one batch.
#[derive(Clone)]
struct TenantDelivery {
    /// The SMTP override (`None`: the default transport); `Err` when its
    /// password cannot be decrypted.
    relay: Result<Option<RelayConfig>, String>,
    per_second: Option<i32>,
}

/// Starts the worker role: `worker.loops` claim loops, the webhook
/// dispatcher, and the LISTEN and maintenance tasks.
pub fn spawn(settings: Arc<Settings>, pool: PgPool, vault: Vault) -> WorkerHandle {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (wake_tx, wake_rx) = watch::channel(0u64);
    let (outbox_tx, outbox_rx) = watch::channel(0u64);
    let ctx = Ctx {
        retry: RetryPolicy {
            initial: Duration::from_millis(settings.delivery.retry_initial_ms),
            max: Duration::from_millis(settings.delivery.retry_max_ms),
        },
        transports: Arc::new(Transports::from_settings(&settings)),
        pacer: Arc::new(Pacer::new(settings.limits.nodes)),
        outbox: Arc::new(outbox_tx),
        pool,
        vault,
        settings,
    };
    // The LISTEN thread ends by itself once every wake receiver (the claim
    // loops and the webhook dispatcher) is gone.
    let url = ctx.settings.database.url.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("postline-listen".into())
        .spawn(move || listen(url, wake_tx))
    {
        tracing::error!(error = %e, "LISTEN thread not started; claim loops poll");
    }
    let helpers = vec![tokio::spawn(maintenance(
        ctx.pool.clone(),
        ctx.settings.webhooks.log_retention_days,
        ctx.settings.retention.clone(),
    ))];
    let mut loops: Vec<JoinHandle<()>> = (0..ctx.settings.worker.loops)
        .map(|_| {
            tokio::spawn(claim_loop(
                ctx.clone(),
                wake_rx.clone(),
                shutdown_rx.clone(),
            ))
        })
        .collect();
    // The webhook dispatcher runs with the worker role and stops with it. It
    // wakes on commits of new mail (their `email.queued` events, via LISTEN)
    // and on recorded outcomes (their events), besides its own poll.
    match dispatcher::spawn(
        ctx.settings.clone(),
        ctx.pool.clone(),
        ctx.vault.clone(),
        shutdown_rx.clone(),
        [wake_rx.clone(), outbox_rx],
    ) {
        Ok(handle) => loops.push(handle),
        Err(e) => tracing::error!(error = %format!("{e:#}"), "webhook dispatcher not started"),
    }
    WorkerHandle {
        shutdown: shutdown_tx,
        loops,
        helpers,
    }
}

async fn claim_loop(ctx: Ctx, mut wake: watch::Receiver<u64>, mut shutdown: watch::Receiver<bool>) {
    let idle = Duration::from_millis(ctx.settings.worker.poll_interval_ms);
    let limit = i64::try_from(ctx.settings.worker.concurrency).unwrap_or(32);
    let lease = ctx.settings.delivery.lease_secs as f64;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Mark the current wake-up as seen before claiming, so a NOTIFY that
        // lands during the claim is not lost.
        wake.borrow_and_update();
        let skip = ctx.pacer.throttled();
        let claimed = db::run(&ctx.pool, move |conn| {
            Ok(claim::claim(conn, limit, lease, &skip)?)
        })
        .await;
        let pause = match claimed {
            Ok(rows) if !rows.is_empty() => {
                process(&ctx, rows, &shutdown).await;
                continue;
            }
            Ok(_) => idle,
            Err(e) => {
                tracing::warn!(error = %e, "claiming mail failed; retrying");
                idle.max(Duration::from_secs(1))
            }
        };
        tokio::select! {
            _ = changed(&mut wake) => {}
            _ = tokio::time::sleep(pause) => {}
            _ = changed(&mut shutdown) => {}
        }
    }
}

/// Sends one claimed batch concurrently and records every outcome.
async fn process(ctx: &Ctx, rows: Vec<EmailRow>, shutdown: &watch::Receiver<bool>) {
    let relays = tenant_relays(ctx, &rows).await;
    let built = tokio::task::spawn_blocking(move || {
        rows.into_iter()
            .map(|row| {
                let raw = mime::build(&row);
                (row, raw)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let concurrency = ctx.settings.worker.concurrency.max(1);
    // Admission runs in claim order as the stream is pulled: a paced tenant's
    // surplus goes back to the queue at its turn instead of waiting here.
    let outcomes: Vec<Outcome> = stream::iter(built)
        .map(|(row, raw)| {
            let tenant = relays.get(&row.tenant_id).cloned();
            let hold = if *shutdown.borrow() {
                Some(Utc::now())
            } else {
                let turn = ctx
                    .pacer
                    .admit(row.tenant_id, tenant.as_ref().and_then(|t| t.per_second));
                if turn.is_some() {
                    metrics::limited("paced");
                }
                turn
            };
            async move {
                match hold {
                    Some(at) => requeue(row, at),
                    None => attempt(ctx, row, raw, tenant.map(|t| t.relay)).await,
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for o in &outcomes {
        metrics::delivery(o.resolution.label());
    }
    let evented = outcomes.iter().any(|o| o.resolution.event().is_some());
    record_with_retry(ctx, outcomes).await;
    if evented {
        ctx.outbox.send_modify(|n| *n = n.wrapping_add(1));
    }
}

fn requeue(row: EmailRow, at: chrono::DateTime<Utc>) -> Outcome {
    Outcome {
        tenant_id: row.tenant_id,
        email_id: row.id,
        attempt: row.attempts,
        resolution: Resolution::Requeued { at },
    }
}

async fn attempt(
    ctx: &Ctx,
    row: EmailRow,
    raw: anyhow::Result<Vec<u8>>,
    relay: Option<Result<Option<RelayConfig>, String>>,
) -> Outcome {
    let outcome = |resolution| Outcome {
        tenant_id: row.tenant_id,
        email_id: row.id,
        attempt: row.attempts,
        resolution,
    };
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            tracing::error!(email_id = %row.id, error = %e, "message cannot be built");
            return outcome(Resolution::Failed {
                reason: format!("message cannot be built: {e}"),
            });
        }
    };
    let relay = match relay.unwrap_or(Ok(None)) {
        Ok(r) => r,
        Err(why) => return outcome(deferral(ctx, &row, why)),
    };
    let transport = ctx.transports.for_tenant(relay);
    let recipients = row
        .to_addrs
        .iter()
        .chain(&row.cc_addrs)
        .chain(&row.bcc_addrs);
    let msg = OutgoingMessage {
        tenant_id: TenantId(row.tenant_id),
        email_id: row.id,
        envelope_from: row.envelope_from.clone(),
        recipients: recipients.map(|r| address_of(r)).collect(),
        raw,
    };
    let started = std::time::Instant::now();
    let sent = transport.send(&msg).await;
    let label = match &sent {
        delivery::Outcome::Delivered { .. } => "delivered",
        delivery::Outcome::Bounced { .. } => "bounced",
        delivery::Outcome::Deferred { .. } => "deferred",
    };
    metrics::smtp_send(label, started.elapsed());
    let resolution = match sent {
        delivery::Outcome::Delivered { response } => Resolution::Delivered { response },
        delivery::Outcome::Bounced { response } => Resolution::Bounced { response },
        delivery::Outcome::Deferred { response } => deferral(ctx, &row, response),
    };
    outcome(resolution)
}

/// The bare address of a stored mailbox (`Name <a@b>` → `a@b`).
fn address_of(mailbox: &str) -> String {
    mailbox
        .parse::<lettre::message::Mailbox>()
        .map(|m| m.email.to_string())
        .unwrap_or_else(|_| mailbox.to_string())
}

/// Deferred with backoff, or failed once the next try would pass the
/// message's lifetime.
fn deferral(ctx: &Ctx, row: &EmailRow, response: String) -> Resolution {
    let delay = ctx.retry.delay(row.attempts);
    let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
    if next > row.expires_at {
        Resolution::Failed {
            reason: format!("gave up after {} attempts: {response}", row.attempts),
        }
    } else {
        Resolution::Deferred {
            response,
            next_attempt_at: next,
        }
    }
}

/// The SMTP override of each tenant in the batch (decrypted), `None` for the
/// default transport; an undecryptable password defers that tenant's mail
/// rather than silently using another relay.
async fn tenant_relays(ctx: &Ctx, rows: &[EmailRow]) -> HashMap<Uuid, TenantDelivery> {
    let mut ids: Vec<Uuid> = rows.iter().map(|r| r.tenant_id).collect();
    ids.sort();
    ids.dedup();
    let fetched = db::run(&ctx.pool, move |conn| {
        Ok(tenants_db::find_many(conn, &ids)?)
    })
    .await;
    let tenants = match fetched {
        Ok(t) => t,
        Err(e) => {
            let unavailable = TenantDelivery {
                relay: Err(format!("tenant settings unavailable: {e}")),
                per_second: None,
            };
            return rows
                .iter()
                .map(|r| (r.tenant_id, unavailable.clone()))
                .collect();
        }
    };
    tenants
        .into_iter()
        .map(|t| {
            let delivery = TenantDelivery {
                relay: relay_of(&ctx.vault, &t),
                per_second: t.emails_per_second,
            };
            (t.id, delivery)
        })
        .collect()
}

fn relay_of(vault: &Vault, t: &TenantRow) -> Result<Option<RelayConfig>, String> {
    let Some(host) = t.smtp_host.clone() else {
        return Ok(None);
    };
    let password = match &t.smtp_password_enc {
        None => None,
        Some(sealed) => {
            let plain = vault
                .open(sealed, &smtp_password_context(t.id))
                .map_err(|e| format!("tenant SMTP password cannot be decrypted: {e}"))?;
            Some(Secret::new(String::from_utf8_lossy(&plain).into_owned()))
        }
    };
    Ok(Some(RelayConfig {
        host,
        port: t
            .smtp_port
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(587),
        tls: t
            .smtp_tls
            .as_deref()
            .and_then(TlsMode::parse)
            .unwrap_or(TlsMode::Starttls),
        username: t.smtp_username.clone(),
        password,
    }))
}

/// Outcomes must reach the database: a message already accepted by the relay
/// is otherwise sent again after its lease expires. Retries for a while.
async fn record_with_retry(ctx: &Ctx, outcomes: Vec<Outcome>) {
    let outcomes = Arc::new(outcomes);
    for attempt in 0..30u32 {
        let batch = outcomes.clone();
        match db::run(&ctx.pool, move |conn| Ok(claim::record(conn, &batch)?)).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "recording delivery outcomes failed; retrying");
                tokio::time::sleep(
                    Duration::from_millis(200 * u64::from(attempt + 1)).min(Duration::from_secs(5)),
                )
                .await;
            }
        }
    }
    tracing::error!(
        count = outcomes.len(),
        "delivery outcomes lost; the leases will expire and the messages be retried"
    );
}

/// Resolves when `rx` sees a new value; never, once its sender is gone (a
/// closed channel must not turn a `select!` into a busy loop).
pub(crate) async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How often the LISTEN thread reads its socket for notifications.
const LISTEN_POLL: Duration = Duration::from_millis(5);

/// LISTENs on the queue channel and bumps the wake counter on every NOTIFY;
/// reconnects with backoff; ends once every receiver of `wake` is gone.
///
/// The connection is libpq's (diesel), opened from `database.url` exactly as
/// the pool's are, so every `sslmode` (`require`, `verify-full` with
/// `sslrootcert`, …) and libpq parameter works here too. libpq has no
/// blocking wait for notifications without a query, so a dedicated thread
/// reads what has arrived every [`LISTEN_POLL`] (a non-blocking read: one
/// syscall, ~200 a second), adding at most that to a wake-up.
fn listen(url: Secret, wake: watch::Sender<u64>) {
    use diesel::{Connection, PgConnection, RunQueryDsl};
    let mut backoff = Duration::from_millis(200);
    while !wake.is_closed() {
        match PgConnection::establish(url.expose()) {
            Ok(mut conn) => {
                backoff = Duration::from_millis(200);
                match diesel::sql_query(format!("LISTEN {}", crate::queue::CHANNEL))
                    .execute(&mut conn)
                {
                    Ok(_) => {
                        // Wake everyone once: mail may have arrived while we were not listening.
                        wake.send_modify(|n| *n = n.wrapping_add(1));
                        if let Err(e) = relay_notifications(&mut conn, &wake) {
                            tracing::warn!(error = %e, "LISTEN connection lost");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed"),
                }
            }
            Err(e) => tracing::debug!(error = %e, "LISTEN connect failed"),
        }
        // Sleep in small steps, so a stopped worker does not wait for it.
        let until = std::time::Instant::now() + backoff;
        while std::time::Instant::now() < until && !wake.is_closed() {
            std::thread::sleep(LISTEN_POLL);
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Turns the notifications arriving on `conn` into wake-ups until the
/// connection fails (`Err`) or the worker is gone (`Ok`).
fn relay_notifications(
    conn: &mut diesel::PgConnection,
    wake: &watch::Sender<u64>,
) -> diesel::QueryResult<()> {
    while !wake.is_closed() {
        let mut woken = false;
        for n in conn.notifications_iter() {
            n?;
            woken = true;
        }
        if woken {
            wake.send_modify(|n| *n = n.wrapping_add(1));
        }
        std::thread::sleep(LISTEN_POLL);
    }
    Ok(())
}

/// Reclaims expired leases every few seconds; hourly, purges old
/// idempotency keys and finished webhook deliveries.
async fn maintenance(
    pool: PgPool,
    webhook_log_days: u32,
    retention: crate::config::RetentionSettings,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        let purge = n % 720 == 0;
        let retention = retention.clone();
        let r = db::run(&pool, move |conn| {
            let reclaimed = claim::reclaim_expired(conn)?;
            if purge {
                crate::emails::idempotency::purge_expired(conn)?;
                crate::webhooks::deliveries::purge_finished(conn, webhook_log_days)?;
                crate::retention::purge(conn, &retention)?;
            }
            Ok(reclaimed)
        })
        .await;
        match r {
            Ok(0) => {}
            Ok(k) => tracing::info!(reclaimed = k, "expired leases reclaimed"),
            Err(e) => tracing::debug!(error = %e, "maintenance skipped"),
        }
    }
}
