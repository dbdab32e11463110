//! Prometheus metrics at `/metrics`. Labels are bounded by construction: the
//! route *pattern* (never the raw path), the method, the status code, and
//! small fixed sets of outcomes. Tenants are never a label — per-tenant
//! figures belong to the usage API, and one label per tenant would grow
//! without bound on a platform with thousands of tenants.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::db::{self, PgPool};

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_latency: HistogramVec,
    deliveries: IntCounterVec,
    smtp_latency: HistogramVec,
    webhook_latency: HistogramVec,
    limited: IntCounterVec,
    queue_depth: IntGaugeVec,
    ingest_batch: HistogramVec,
    argon2: IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn build() -> prometheus::Result<Metrics> {
    let registry = Registry::new_custom(Some("postline".into()), None)?;
    let http_requests = IntCounterVec::new(
        Opts::new(
            "http_requests_total",
            "HTTP requests by route pattern, method and status",
        ),
        &["route", "method", "status"],
    )?;
    let http_latency = HistogramVec::new(
        HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
            .buckets(LATENCY_BUCKETS.to_vec()),
        &["route", "method"],
    )?;
    let deliveries = IntCounterVec::new(
        Opts::new("deliveries_total", "Delivery attempts by outcome"),
        &["outcome"],
    )?;
    let smtp_latency = HistogramVec::new(
        HistogramOpts::new(
            "smtp_send_duration_seconds",
            "Time to hand one message to its transport",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["outcome"],
    )?;
    let webhook_latency = HistogramVec::new(
        HistogramOpts::new("webhook_request_duration_seconds", "Webhook POST latency")
            .buckets(LATENCY_BUCKETS.to_vec()),
        &["outcome"],
    )?;
    let limited = IntCounterVec::new(
        Opts::new(
            "limiter_rejections_total",
            "Requests or messages held back by a limit",
        ),
        &["limit"],
    )?;
    let queue_depth = IntGaugeVec::new(
        Opts::new(
            "queue_depth",
            "Messages in the queue: ready (queued or deferred), sending (leased), held (tenant suspended); counted at most once per metrics.queue_depth_secs",
        ),
        &["status"],
    )?;
    let ingest_batch = HistogramVec::new(
        HistogramOpts::new(
            "ingest_batch_rows",
            "Messages committed per coalesced enqueue transaction",
        )
        .buckets(vec![
            1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
        ]),
        &[],
    )?;
    let argon2 = IntCounter::new(
        "auth_argon2_verifications_total",
        "argon2id verifications run to authenticate (cache misses of new secrets)",
    )?;
    for c in [
        Box::new(argon2.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(http_requests.clone()),
        Box::new(http_latency.clone()),
        Box::new(deliveries.clone()),
        Box::new(smtp_latency.clone()),
        Box::new(webhook_latency.clone()),
        Box::new(limited.clone()),
        Box::new(queue_depth.clone()),
        Box::new(ingest_batch.clone()),
    ] {
        registry.register(c)?;
    }
    Ok(Metrics {
        registry,
        http_requests,
        http_latency,
        deliveries,
        smtp_latency,
        webhook_latency,
        limited,
        queue_depth,
        ingest_batch,
        argon2,
    })
}

/// The process-wide metrics (one registry per process, as Prometheus expects).
pub fn get() -> Option<&'static Metrics> {
    static METRICS: OnceLock<Option<Metrics>> = OnceLock::new();
    METRICS
        .get_or_init(|| match build() {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!(error = %e, "metrics registry could not be built; /metrics will be empty");
                None
            }
        })
        .as_ref()
}

pub fn http(route: &str, method: &str, status: u16, elapsed: Duration) {
    if let Some(m) = get() {
        m.http_requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        m.http_latency
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }
}

/// `outcome` is one of delivered, deferred, bounced, failed, requeued.
pub fn delivery(outcome: &str) {
    if let Some(m) = get() {
        m.deliveries.with_label_values(&[outcome]).inc();
    }
}

pub fn smtp_send(outcome: &str, elapsed: Duration) {
    if let Some(m) = get() {
        m.smtp_latency
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
    }
}

pub fn webhook_request(outcome: &str, elapsed: Duration) {
    if let Some(m) = get() {
        m.webhook_latency
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
    }
}

/// `limit` is one of rate_limited, daily_quota_exceeded, paced.
pub fn limited(limit: &str) {
    if let Some(m) = get() {
        m.limited.with_label_values(&[limit]).inc();
    }
}

pub fn argon2_verification() {
    if let Some(m) = get() {
        m.argon2.inc();
    }
}

pub fn ingest_batch(rows: usize) {
    if let Some(m) = get() {
        m.ingest_batch
            .with_label_values::<&str>(&[])
            .observe(rows as f64);
    }
}

/// Adds a capability's own collectors to the registry (direct delivery's
/// per-site metrics, `delivery::mx::metrics`).
pub fn register(collector: Box<dyn prometheus::core::Collector>) {
    if let Some(m) = get() {
        if let Err(e) = m.registry.register(collector) {
            tracing::error!(error = %e, "metrics collector not registered");
        }
    }
}

/// A count of the queue by status, and when it was taken.
type Sample = (Instant, Vec<(String, i64)>);

/// The queue depth for `/metrics`, counted at most once per `period`: the
/// count is a `GROUP BY` over the queue, and a scrape (or several
/// Prometheus replicas, or anyone who can reach the port) must not cost one
/// each. A scrape inside the period gets the last count; concurrent scrapes
/// after it share one query (the lock is held across it).
#[derive(Clone)]
pub struct QueueDepth {
    pool: PgPool,
    period: Duration,
    last: Arc<tokio::sync::Mutex<Option<Sample>>>,
    queries: Arc<AtomicU64>,
}

impl QueueDepth {
    pub fn new(pool: PgPool, period: Duration) -> Self {
        Self {
            pool,
            period,
            last: Arc::default(),
            queries: Arc::default(),
        }
    }

    /// The depth by status; zeros when the database is unreachable (a
    /// scrape never fails because of it; the failure is retried next scrape).
    pub async fn get(&self) -> Vec<(String, i64)> {
        let mut last = self.last.lock().await;
        if let Some((at, depth)) = last.as_ref() {
            if at.elapsed() < self.period {
                return depth.clone();
            }
        }
        self.queries.fetch_add(1, Ordering::Relaxed);
        match db::run(&self.pool, |conn| {
            Ok(crate::queue::model::depth(conn)?
                .into_iter()
                .map(|r| (r.state, r.n))
                .collect::<Vec<_>>())
        })
        .await
        {
            Ok(depth) => {
                *last = Some((Instant::now(), depth.clone()));
                depth
            }
            Err(_) => Vec::new(),
        }
    }

    /// Count queries run so far (tests).
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

/// Renders the text exposition with this queue depth.
pub fn render(queue: &[(String, i64)]) -> String {
    let Some(m) = get() else {
        return String::new();
    };
    for status in ["ready", "sending", "held"] {
        let n = queue
            .iter()
            .find(|(s, _)| s == status)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        m.queue_depth.with_label_values(&[status]).set(n);
    }
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}
