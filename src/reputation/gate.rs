//! The send paths' check (DESIGN §15: no query per send): this process's
//! copy of the paused tenants and why, reloaded every second from the
//! partial index on `tenant_reputation`, and changed at once by this node's
//! own decisions and reinstatements.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use uuid::Uuid;

use crate::db::{self, PgPool};
use crate::error::{AppError, AppResult};

/// How often every node reloads the paused set.
pub const REFRESH: Duration = Duration::from_secs(1);

#[derive(Clone, Default)]
pub struct Gate {
    paused: Arc<RwLock<HashMap<Uuid, String>>>,
}

impl Gate {
    /// 403 `tenant_paused` (its detail: the figure and the threshold) for a
    /// paused tenant; `Ok` otherwise.
    pub fn check(&self, tenant: Uuid) -> AppResult<()> {
        if !super::track::enabled() {
            return Ok(());
        }
        let paused = self.paused.read().unwrap_or_else(|p| p.into_inner());
        match paused.get(&tenant) {
            None => Ok(()),
            Some(reason) => Err(AppError::forbidden(
                "tenant_paused",
                format!("This tenant's sending is paused for its reputation: {reason}. An administrator can reinstate it."),
            )),
        }
    }

    pub fn is_paused(&self, tenant: Uuid) -> bool {
        self.reason(tenant).is_some()
    }

    /// Why the tenant is paused (`None`: it is not).
    pub fn reason(&self, tenant: Uuid) -> Option<String> {
        let paused = self.paused.read().unwrap_or_else(|p| p.into_inner());
        paused.get(&tenant).cloned()
    }

    pub fn pause(&self, tenant: Uuid, reason: String) {
        self.write().insert(tenant, reason);
    }

    pub fn reinstate(&self, tenant: Uuid) {
        self.write().remove(&tenant);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Uuid, String>> {
        self.paused.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the set with what the database says now.
    pub async fn reload(&self, pool: &PgPool) -> AppResult<()> {
        let rows = db::run(pool, |conn| Ok(super::model::paused(conn)?)).await?;
        *self.write() = rows.into_iter().collect();
        Ok(())
    }

    /// Reloads every [`REFRESH`] until the runtime stops.
    pub fn spawn_reloader(&self, pool: PgPool) -> tokio::task::JoinHandle<()> {
        let gate = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = gate.reload(&pool).await {
                    tracing::warn!(error = %e, "reputation: reloading the paused tenants failed");
                }
            }
        })
    }
}
