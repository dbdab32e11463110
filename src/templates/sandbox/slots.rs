//! Who gets a render process next (issue 22, finding 10). Renders wait
//! asynchronously, never on a blocking-pool thread, in two queues, both
//! first come, first served (tokio's semaphores are fair): their tenant's
//! (`templates.render_processes_per_tenant` at once), then everyone's
//! (`templates.render_processes`). A tenant that floods renders queues behind
//! itself; at most its share of processes is busy with it, so another
//! tenant's render finds a free one or waits only for the renders of tenants
//! within their share. The whole wait is bounded (`templates.render_wait_ms`):
//! past it the render is refused with 429 `template_renders_busy`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::TemplateSettings;
use crate::domain::TenantId;
use crate::error::AppError;

/// The right to use one render process, held for the whole render.
pub struct Slot {
    _global: OwnedSemaphorePermit,
    _tenant: TenantShare,
}

pub struct Slots {
    global: Arc<Semaphore>,
    per_tenant: usize,
    wait: Duration,
    /// The queues of tenants with renders running or waiting; an entry is
    /// removed when its last holder goes, so the map is bounded by the
    /// renders in progress.
    tenants: Arc<Mutex<HashMap<TenantId, Arc<Semaphore>>>>,
}

impl Slots {
    pub fn new(s: &TemplateSettings) -> Self {
        let max = s.render_processes.max(1);
        Self {
            global: Arc::new(Semaphore::new(max)),
            per_tenant: s.render_processes_per_tenant.clamp(1, max),
            wait: Duration::from_millis(s.render_wait_ms),
            tenants: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Waits (at most `render_wait_ms`) for a process for `tenant`.
    pub async fn acquire(&self, tenant: TenantId) -> Result<Slot, AppError> {
        let mut share = self.share(tenant)?;
        let queued = async {
            share.permit = Some(share.sem.clone().acquire_owned().await.ok()?);
            self.global.clone().acquire_owned().await.ok()
        };
        match tokio::time::timeout(self.wait, queued).await {
            Ok(Some(global)) => Ok(Slot {
                _global: global,
                _tenant: share,
            }),
            // The semaphores are never closed.
            Ok(None) => Err(AppError::internal(
                "template sandbox",
                "render slots closed",
            )),
            Err(_) => Err(busy(self.wait)),
        }
    }

    fn share(&self, tenant: TenantId) -> Result<TenantShare, AppError> {
        let mut map = self
            .tenants
            .lock()
            .map_err(|_| AppError::internal("template sandbox", "slot map poisoned"))?;
        let sem = map
            .entry(tenant)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
            .clone();
        Ok(TenantShare {
            map: self.tenants.clone(),
            tenant,
            sem,
            permit: None,
        })
    }
}

/// A place in a tenant's queue (and, once `permit` is set, one of its
/// processes). Every clone of `sem` outside the map belongs to a live
/// `TenantShare` or to its permit, and clones are only made under the map's
/// lock, so the last one to leave sees a count of two (the map's and its own)
/// and removes the entry.
struct TenantShare {
    map: Arc<Mutex<HashMap<TenantId, Arc<Semaphore>>>>,
    tenant: TenantId,
    sem: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for TenantShare {
    fn drop(&mut self) {
        self.permit.take();
        if let Ok(mut map) = self.map.lock() {
            if Arc::strong_count(&self.sem) == 2 {
                map.remove(&self.tenant);
            }
        }
    }
}

fn busy(wait: Duration) -> AppError {
    AppError::TooManyRequests {
        code: "template_renders_busy",
        detail: format!(
            "No template render process became free within {} ms \
             (templates.render_wait_ms); retry later.",
            wait.as_millis()
        ),
        retry_after_secs: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(processes: usize, per_tenant: usize, wait_ms: u64) -> Slots {
        Slots::new(&TemplateSettings {
            render_processes: processes,
            render_memory_mb: 64,
            render_processes_per_tenant: per_tenant,
            render_wait_ms: wait_ms,
            sandbox_program: String::new(),
        })
    }

    fn tenant(n: u128) -> TenantId {
        TenantId(uuid::Uuid::from_u128(n))
    }

    #[tokio::test]
    async fn a_tenant_at_its_share_leaves_the_others_a_process() {
        let s = slots(2, 1, 100);
        let a = s.acquire(tenant(1)).await.unwrap();
        // A second render of the same tenant waits past the bound...
        let e = s.acquire(tenant(1)).await.err().unwrap();
        assert_eq!(e.code(), "template_renders_busy");
        // ...while another tenant gets the free process at once.
        let b = s.acquire(tenant(2)).await.unwrap();
        // Both processes busy: a third tenant waits and is refused.
        assert!(s.acquire(tenant(3)).await.is_err());
        drop(a);
        let c = s.acquire(tenant(3)).await.unwrap();
        drop((b, c));
        assert!(s.tenants.lock().unwrap().is_empty(), "entries removed");
    }

    #[tokio::test]
    async fn waiters_are_served_in_turn() {
        let s = Arc::new(slots(1, 1, 5_000));
        let first = s.acquire(tenant(1)).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for n in 2..6u128 {
            let (s, tx) = (s.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let slot = s.acquire(tenant(n)).await.unwrap();
                tx.send(n).unwrap();
                drop(slot);
            }));
            // Each one queued before the next.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        let order: Vec<u128> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(order, [2, 3, 4, 5]);
    }
}
