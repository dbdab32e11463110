//! Bounce domains per sending domain (API.md "Bounces"): a message goes out
//! with `MAIL FROM:<b+TOKEN@…>` at the return-path record name
//! (`pl-bounces.<domain>`) of the most specific of its tenant's domains for
//! the From domain whose record checked `ok`, else at `bounces.domain`. The
//! inbound listener serves `bounces.domain` and every such name of any live
//! tenant. Both answers are cached for `domains.cache_secs` (the send path
//! and RCPT are hot), so a record that stops checking `ok` stops being used
//! within that time; failed lookups are not cached.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use uuid::Uuid;

use crate::config::Settings;
use crate::db::{self, PgPool};
use crate::domain::TenantId;
use crate::domains::model;
use crate::domains::sending::suffixes;
use crate::domains::signing::from_domain;

/// Entries per cache: bounded, whatever names senders or RCPTs use.
const CACHE_ENTRIES: u64 = 100_000;

#[derive(Clone)]
pub struct ReturnPaths {
    pool: PgPool,
    /// `bounces.domain`, lower-cased; empty = return paths off.
    default: Arc<str>,
    by_sender: Cache<(Uuid, String), Option<Arc<str>>>,
    served: Cache<String, bool>,
}

impl ReturnPaths {
    pub fn new(settings: &Settings, pool: PgPool) -> Self {
        let ttl = Duration::from_secs(settings.domains.cache_secs);
        ReturnPaths {
            pool,
            default: settings.bounces.domain.to_ascii_lowercase().into(),
            by_sender: Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .time_to_live(ttl)
                .build(),
            served: Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// `bounces.domain` (empty: off).
    pub fn default_domain(&self) -> &str {
        &self.default
    }

    /// The bounce domain of a message of `tenant` from `from_addr`; `None`
    /// when return paths are off. A failed lookup falls back to
    /// `bounces.domain` (which the listener always serves).
    pub async fn domain_for(&self, tenant: Uuid, from_addr: &str) -> Option<Arc<str>> {
        if self.default.is_empty() {
            return None;
        }
        let Some(from) = from_domain(from_addr) else {
            return Some(self.default.clone());
        };
        let pool = self.pool.clone();
        let names = suffixes(&from);
        let own = self
            .by_sender
            .try_get_with((tenant, from), async move {
                db::run(&pool, move |conn| {
                    Ok(model::return_path_for(conn, TenantId(tenant), &names)?)
                })
                .await
                .map(|name| name.map(Arc::from))
            })
            .await;
        match own {
            Ok(Some(name)) => Some(name),
            Ok(None) => Some(self.default.clone()),
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "return-path lookup failed; using bounces.domain");
                Some(self.default.clone())
            }
        }
    }

    /// Whether the listener takes mail for `domain` (lower-case): the bounce
    /// domain, or a return-path record name that checked `ok`. `Err` when the
    /// database cannot tell (the caller answers 451).
    pub async fn serves(&self, domain: &str) -> Result<bool, String> {
        if self.default.is_empty() {
            return Ok(false);
        }
        if domain == &*self.default {
            return Ok(true);
        }
        let label = crate::domains::checks::RETURN_PATH_LABEL;
        let named = domain
            .strip_prefix(label)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'));
        if !named || domain.len() > 253 {
            return Ok(false);
        }
        let pool = self.pool.clone();
        let name = domain.to_string();
        self.served
            .try_get_with(name.clone(), async move {
                db::run(&pool, move |conn| {
                    Ok(model::serves_return_path(conn, &name)?)
                })
                .await
            })
            .await
            .map_err(|e| e.to_string())
    }
}
