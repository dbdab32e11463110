//! Outcomes are recorded as sends finish: one task takes whatever outcomes
//! have arrived while it wrote the previous ones and writes them in one
//! fenced transaction (`queue::record`), so a slow send never holds back
//! the outcomes of others, and batches grow with load.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::inflight::Inflight;
use crate::db::{self, PgPool};
use crate::metrics;
use crate::queue::record::{self, Outcome};

/// The most outcomes written in one transaction.
const MAX_BATCH: usize = 512;

/// An outcome on its way to the database.
pub type Done = Outcome;

pub async fn run(
    pool: PgPool,
    inflight: Arc<Inflight>,
    mut rx: mpsc::Receiver<Done>,
    outbox: watch::Sender<u64>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        for o in &batch {
            metrics::delivery(o.resolution.label());
        }
        let leases: Vec<_> = batch.iter().map(|o| o.lease).collect();
        inflight.recording(&leases);
        let webhook_rows = record_with_retry(&pool, batch).await;
        inflight.recorded(&leases);
        if webhook_rows > 0 {
            outbox.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// Outcomes must reach the database: a message already accepted by the relay
/// is otherwise sent again after its lease expires. Retries for a while (the
/// leases are renewed meanwhile: they stay held until this returns).
/// Returns the webhook outbox rows written (0 when the outcomes were lost).
pub async fn record_with_retry(pool: &PgPool, outcomes: Vec<Outcome>) -> usize {
    let outcomes = Arc::new(outcomes);
    for attempt in 0..30u32 {
        let batch = outcomes.clone();
        match db::run(pool, move |conn| Ok(record::record(conn, &batch)?)).await {
            Ok(r) => return r.webhook_rows,
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
    0
}
