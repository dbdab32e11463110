//! The webhook dispatcher (worker role): leases due outbox rows with
//! `FOR UPDATE SKIP LOCKED` (so several workers share the work without a
//! coordinator), POSTs them concurrently, and records every attempt. Any 2xx
//! succeeds; 410 Gone fails the delivery and disables the endpoint; anything
//! else is retried with exponential backoff and jitter until
//! `webhooks.retry_window_secs` after the event, then the delivery fails.
//! Slots are shared fairly: each endpoint and each tenant has a cap on its
//! deliveries in flight, so one tenant's slow endpoints delay only its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use super::deliveries::{self, Attempt, ClaimLimits, Claimed, Next};
use super::sender::Sender;
use super::signing;
use crate::config::Settings;
use crate::crypto::Vault;
use crate::db::{self, PgPool};
use crate::queue::retry::RetryPolicy;
use crate::worker::changed;

#[derive(Clone)]
struct Dispatcher {
    pool: PgPool,
    vault: Vault,
    sender: Sender,
    settings: Arc<Settings>,
    retry: RetryPolicy,
    /// The caps across the nodes (issue 27); `None`: this dispatcher's own.
    shared: Option<super::shared::SharedFlight>,
}

/// Wake-ups closer than this are coalesced into one claim: under load, new
/// mail commits hundreds of times a second, and each would otherwise cost an
/// (empty) claim query.
const MIN_WAKE_GAP: Duration = Duration::from_millis(20);

/// Starts the dispatcher loop; it stops (after finishing the POSTs in
/// flight) when `shutdown` turns true. A change on either of `wakes` (new
/// outbox rows were committed) starts a claim before the poll interval is up.
pub fn spawn(
    settings: Arc<Settings>,
    pool: PgPool,
    vault: Vault,
    shutdown: watch::Receiver<bool>,
    wakes: [watch::Receiver<u64>; 2],
) -> anyhow::Result<JoinHandle<()>> {
    spawn_shared(settings, pool, vault, shutdown, wakes, None)
}

/// [`spawn`] with the caps held across the nodes (`super::shared`).
pub fn spawn_shared(
    settings: Arc<Settings>,
    pool: PgPool,
    vault: Vault,
    shutdown: watch::Receiver<bool>,
    wakes: [watch::Receiver<u64>; 2],
    shared: Option<super::shared::SharedFlight>,
) -> anyhow::Result<JoinHandle<()>> {
    let w = &settings.webhooks;
    let d = Dispatcher {
        sender: Sender::new(w)?,
        retry: RetryPolicy {
            initial: Duration::from_millis(w.retry_initial_ms),
            max: Duration::from_millis(w.retry_max_ms),
        },
        pool,
        vault,
        settings,
        shared,
    };
    Ok(tokio::spawn(d.run(shutdown, wakes)))
}

/// What this dispatcher has in flight, per endpoint and per owner.
#[derive(Default)]
struct InFlight {
    total: usize,
    endpoints: HashMap<Uuid, usize>,
    owners: HashMap<Uuid, usize>,
}

impl InFlight {
    fn add(&mut self, c: &Claimed) {
        self.total += 1;
        *self.endpoints.entry(c.webhook_id).or_default() += 1;
        *self.owners.entry(c.owner).or_default() += 1;
    }

    fn remove(&mut self, endpoint: Uuid, owner: Uuid) {
        self.total = self.total.saturating_sub(1);
        for (map, key) in [(&mut self.endpoints, endpoint), (&mut self.owners, owner)] {
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }

    fn busy(map: &HashMap<Uuid, usize>) -> Vec<(Uuid, i32)> {
        map.iter()
            .map(|(k, n)| (*k, i32::try_from(*n).unwrap_or(i32::MAX)))
            .collect()
    }
}

/// One delivery's place in [`InFlight`], given back when its task ends.
struct Slot {
    flight: Arc<Mutex<InFlight>>,
    finished: Arc<Notify>,
    endpoint: Uuid,
    owner: Uuid,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut f) = self.flight.lock() {
            f.remove(self.endpoint, self.owner);
        }
        self.finished.notify_one();
    }
}

/// Attempts recorded per transaction at most.
const RECORD_BATCH: usize = 256;

impl Dispatcher {
    /// Claims whenever slots are free and POSTs each delivery as its own
    /// task: a slow endpoint holds only its own slots (at most
    /// `max_in_flight_per_endpoint`, and its tenant at most
    /// `max_in_flight_per_tenant`), never a whole claimed batch. Finished
    /// attempts go to one recorder task that writes them in batches.
    async fn run(self, mut shutdown: watch::Receiver<bool>, wakes: [watch::Receiver<u64>; 2]) {
        let [mut queue, mut outbox] = wakes;
        let w = &self.settings.webhooks;
        let idle = Duration::from_millis(w.poll_interval_ms);
        let slots = w.concurrency.max(1);
        let lease = w.lease_secs as f64;
        let per_endpoint = i32::try_from(w.max_in_flight_per_endpoint).unwrap_or(2);
        let per_owner = i32::try_from(w.max_in_flight_per_tenant).unwrap_or(4);
        let this = Arc::new(self.clone());
        let (tx, rx) = mpsc::unbounded_channel::<Attempt>();
        let recorder = tokio::spawn(this.clone().record_loop(rx));
        let flight = Arc::new(Mutex::new(InFlight::default()));
        let finished = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Seen before claiming, so rows committed during the claim wake us again.
            queue.borrow_and_update();
            outbox.borrow_and_update();
            while tasks.try_join_next().is_some() {}
            let mut limits = match flight.lock() {
                Ok(f) => ClaimLimits {
                    limit: i64::try_from(slots.saturating_sub(f.total)).unwrap_or(0),
                    lease_secs: lease,
                    per_endpoint,
                    per_owner,
                    busy_endpoints: InFlight::busy(&f.endpoints),
                    busy_owners: InFlight::busy(&f.owners),
                },
                Err(_) => return,
            };
            if let Some(shared) = &self.shared {
                let (endpoints, owners) = shared.refused();
                super::shared::at_cap(&mut limits.busy_endpoints, endpoints, per_endpoint);
                super::shared::at_cap(&mut limits.busy_owners, owners, per_owner);
            }
            let claimed_at = tokio::time::Instant::now();
            let pause = if limits.limit == 0 {
                idle
            } else {
                let want = limits.limit;
                match db::run(&self.pool, move |conn| {
                    Ok(deliveries::claim(conn, &limits)?)
                })
                .await
                {
                    Ok(rows) => {
                        let full = i64::try_from(rows.len()).unwrap_or(0) >= want;
                        for c in rows {
                            if let Ok(mut f) = flight.lock() {
                                f.add(&c);
                            }
                            let (d, flight, finished, tx) =
                                (this.clone(), flight.clone(), finished.clone(), tx.clone());
                            tasks.spawn(async move {
                                // Frees the slot even if the attempt panics.
                                let _slot = Slot {
                                    flight,
                                    finished,
                                    endpoint: c.webhook_id,
                                    owner: c.owner,
                                };
                                let _held = match &d.shared {
                                    None => None,
                                    Some(s) => match s
                                        .hold(c.webhook_id, c.owner, per_endpoint, per_owner)
                                        .await
                                    {
                                        Some(h) => Some(h),
                                        None => return d.give_back(&c).await,
                                    },
                                };
                                let _ = tx.send(d.attempt(c).await);
                            });
                        }
                        if full {
                            continue;
                        }
                        idle
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming webhook deliveries failed; retrying");
                        idle.max(Duration::from_secs(1))
                    }
                }
            };
            let gap = claimed_at + MIN_WAKE_GAP;
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = changed(&mut shutdown) => {}
                _ = changed(&mut queue) => tokio::time::sleep_until(gap).await,
                _ = changed(&mut outbox) => tokio::time::sleep_until(gap).await,
                // A slot came free: an endpoint or tenant at its cap may
                // have more due rows.
                _ = finished.notified() => tokio::time::sleep_until(gap).await,
            }
        }
        while tasks.join_next().await.is_some() {}
        drop(tx);
        let _ = recorder.await;
    }

    /// A claimed delivery whose cluster-wide slot was refused goes back
    /// unattempted (`super::shared`); if that fails, its lease runs out.
    async fn give_back(&self, c: &Claimed) {
        let (id, claimed) = (c.id, c.clone());
        if let Err(e) = db::run(&self.pool, move |conn| {
            Ok(super::deliveries::give_back(conn, &claimed)?)
        })
        .await
        {
            tracing::warn!(error = %e, delivery_id = %id, "giving a webhook delivery back failed; its lease will run out");
        }
    }

    /// Records finished attempts, as many per transaction as have arrived.
    async fn record_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Attempt>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < RECORD_BATCH {
                match rx.try_recv() {
                    Ok(a) => batch.push(a),
                    Err(_) => break,
                }
            }
            self.record(batch).await;
        }
    }

    async fn record(&self, attempts: Vec<Attempt>) {
        let attempts = Arc::new(attempts);
        for round in 0..10u64 {
            let batch = attempts.clone();
            match db::run(&self.pool, move |conn| {
                Ok(deliveries::record(conn, &batch)?)
            })
            .await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, round, "recording webhook attempts failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * (round + 1))).await;
                }
            }
        }
        tracing::error!(
            count = attempts.len(),
            "webhook attempts not recorded; their leases will expire and they will be sent again"
        );
    }

    #[tracing::instrument(skip_all, fields(delivery_id = %c.id, webhook_id = %c.webhook_id))]
    async fn attempt(&self, c: Claimed) -> Attempt {
        let result =
            |status_code: Option<u16>, error: Option<String>, ms: u128, next: Next| Attempt {
                owner: c.endpoint_owner(),
                delivery_id: c.id,
                webhook_id: c.webhook_id,
                attempt: c.attempts,
                status_code: status_code.map(i32::from),
                error,
                duration_ms: i32::try_from(ms).unwrap_or(i32::MAX),
                next,
            };
        if !c.enabled {
            return result(
                None,
                Some("the endpoint is disabled; not sent".into()),
                0,
                Next::Failed,
            );
        }
        let key = match self
            .vault
            .open(&c.secret_enc, &signing::secret_context(c.webhook_id))
        {
            Ok(key) => key,
            Err(e) => {
                tracing::error!(error = %e, "webhook secret cannot be opened");
                let why = format!("the signing secret cannot be decrypted: {e}");
                return self.retry_or_fail(result(None, Some(why), 0, Next::Failed), c.created_at);
            }
        };
        let body = serde_json::to_vec(&c.payload).unwrap_or_default();
        let resp = self
            .sender
            .post(&c.url, &c.id.to_string(), &key, body)
            .await;
        let ms = resp.duration.as_millis();
        match resp.status_code {
            Some(_) if resp.is_success() => result(resp.status_code, None, ms, Next::Succeeded),
            Some(410) => result(resp.status_code, resp.error, ms, Next::Gone),
            _ => {
                tracing::debug!(status = ?resp.status_code, error = ?resp.error, "webhook attempt failed");
                self.retry_or_fail(
                    result(resp.status_code, resp.error, ms, Next::Failed),
                    c.created_at,
                )
            }
        }
    }

    /// Schedules the next try, or fails the delivery once the retry window
    /// since its event has passed.
    fn retry_or_fail(&self, mut a: Attempt, created_at: DateTime<Utc>) -> Attempt {
        let window = chrono::Duration::seconds(
            i64::try_from(self.settings.webhooks.retry_window_secs).unwrap_or(86_400),
        );
        let now = Utc::now();
        if now >= created_at + window {
            a.error = Some(format!(
                "{}; gave up after {} attempts",
                a.error.as_deref().unwrap_or("failed"),
                a.attempt
            ));
            a.next = Next::Failed;
        } else {
            let delay = self.retry.delay(a.attempt);
            a.next = Next::Retry(
                now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1)),
            );
        }
        a
    }
}
