//! Whether the message a verified VERP token names exists, for the inbound
//! listener's RCPT check, remembered in a bounded cache so a flood of
//! recipients costs no query each: a token that does not verify is refused
//! before this (HMAC only, no query), and a verified one is looked up once
//! per [`TTL`]. Absence is final (a message id is made at ingest, before
//! any token names it), so remembering it is always right; presence may go
//! stale when retention deletes the row, which the DATA path tolerates (a
//! report for a missing message is dropped).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;
use uuid::Uuid;

use super::token::Ref;
use crate::db::{self, PgPool};
use crate::domain::TenantId;

/// How long an answer is remembered.
pub const TTL: Duration = Duration::from_secs(3600);

pub struct Known {
    pool: PgPool,
    cache: Cache<(Uuid, Uuid), bool>,
    lookups: AtomicU64,
}

impl Known {
    /// At most `capacity` answers are kept (least recently used go first).
    pub fn new(pool: PgPool, capacity: u64) -> Self {
        Known {
            pool,
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(TTL)
                .build(),
            lookups: AtomicU64::new(0),
        }
    }

    /// `Err` when the database cannot tell (the caller answers 451);
    /// concurrent checks of one token share one query.
    pub async fn exists(&self, r: Ref) -> Result<bool, String> {
        let pool = self.pool.clone();
        let lookups = &self.lookups;
        self.cache
            .try_get_with((r.tenant_id, r.email_id), async move {
                lookups.fetch_add(1, Ordering::Relaxed);
                db::run(&pool, move |conn| {
                    Ok(crate::emails::model::exists(
                        conn,
                        TenantId(r.tenant_id),
                        r.email_id,
                    )?)
                })
                .await
            })
            .await
            .map_err(|e| e.to_string())
    }

    /// Queries made so far (tests and the bench count them).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Answers held now, once the cache's pending evictions are applied.
    pub async fn entries(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}
