//! A short-lived in-memory copy of tenant rows for the hot paths (ingest,
//! limits), so a send does not cost a tenant read. Changes made on this node
//! clear it at once; other nodes see them within the TTL.

use std::sync::Arc;
use std::time::Duration;

use super::model::{self, TenantRef, TenantRow};
use crate::db::{self, PgPool};
use crate::domain::TenantId;
use crate::error::{AppError, AppResult};

#[derive(Clone)]
pub struct TenantCache {
    pool: PgPool,
    rows: moka::future::Cache<String, Arc<TenantRow>>,
}

impl TenantCache {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self {
            pool,
            rows: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .support_invalidation_closures()
                .build(),
        }
    }

    /// A live (not deleted) tenant by id or external_id; `NotFound` otherwise.
    pub async fn get(&self, r: &TenantRef) -> AppResult<Arc<TenantRow>> {
        let key = match r {
            TenantRef::Id(id) => id.to_string(),
            TenantRef::External(ext) => format!("ext:{ext}"),
        };
        let pool = self.pool.clone();
        let r = r.clone();
        self.rows
            .try_get_with(key, async move {
                db::run(&pool, move |conn| {
                    model::find(conn, &r, false)?.ok_or(AppError::NotFound)
                })
                .await
                .map(Arc::new)
            })
            .await
            .map_err(|e| match e.as_ref() {
                AppError::NotFound => AppError::NotFound,
                AppError::Unavailable(why) => AppError::Unavailable(why.clone()),
                other => AppError::internal("tenant cache", other),
            })
    }

    pub fn invalidate_all(&self) {
        self.rows.invalidate_all();
    }

    /// Forgets one tenant's row (under its id and its external_id); the
    /// other tenants' rows stay cached.
    pub fn invalidate(&self, tenant: TenantId) {
        if self
            .rows
            .invalidate_entries_if(move |_, row| row.id == tenant.0)
            .is_err()
        {
            self.rows.invalidate_all();
        }
    }
}
