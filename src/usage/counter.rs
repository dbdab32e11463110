//! API requests are counted in memory and flushed every few seconds (and at
//! shutdown) in one statement: never a database write per request.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use uuid::Uuid;

use super::model::{self, Counters};
use crate::db::{self, PgPool};
use crate::error::AppResult;

#[derive(Clone)]
pub struct RequestCounter {
    pool: PgPool,
    counts: Arc<Mutex<HashMap<(Uuid, NaiveDate), i64>>>,
}

impl RequestCounter {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            counts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn hit(&self, tenant: Uuid) {
        let day = Utc::now().date_naive();
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((tenant, day)).or_default() += 1;
    }

    /// Writes what was counted; on failure the counts are put back.
    pub async fn flush(&self) -> AppResult<()> {
        let taken: HashMap<(Uuid, NaiveDate), i64> =
            std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            return Ok(());
        }
        let mut by_day: BTreeMap<NaiveDate, BTreeMap<Uuid, Counters>> = BTreeMap::new();
        for ((tenant, day), n) in &taken {
            by_day
                .entry(*day)
                .or_default()
                .entry(*tenant)
                .or_default()
                .api_requests += n;
        }
        let result = db::run(&self.pool, move |conn| {
            for (day, deltas) in &by_day {
                model::add(conn, *day, model::pick_shard(), deltas)?;
            }
            Ok(())
        })
        .await;
        if result.is_err() {
            let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            for (k, n) in taken {
                *map.entry(k).or_default() += n;
            }
        }
        result
    }

    pub fn spawn_flusher(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        crate::db::every(every, "flushing api request counts", move || {
            let this = this.clone();
            async move { this.flush().await }
        })
    }
}
