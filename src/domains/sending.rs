//! The sending rule (API.md "Sending domains"): the From domain must be a
//! verified domain of the sending tenant or a subdomain of one. Names are
//! matched most-specific first across all tenants, so a tenant holding
//! `acme.com` cannot send as `mail.acme.com` once another tenant verified
//! that. Lookups are cached per From domain for `domains.cache_secs` (the
//! send path is hot); this node's changes clear the cache at once.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use uuid::Uuid;

use super::model;
use crate::db::{self, PgPool};
use crate::domain::TenantId;
use crate::error::{AppError, AppResult, FieldError};

/// `(tenant, name, status)` of every domain named like the From domain or
/// one of its parents.
type Holders = Arc<Vec<(Uuid, String, String)>>;

#[derive(Clone)]
pub struct SendingRule {
    pool: PgPool,
    require_verified: bool,
    holders: Cache<String, Holders>,
    /// Tenants with at least one domain (used only when not `require_verified`).
    has_domains: Cache<Uuid, bool>,
}

/// `a.b.c` → `["a.b.c", "b.c", "c"]`.
pub fn suffixes(name: &str) -> Vec<String> {
    let mut out = vec![name.to_string()];
    let mut rest = name;
    while let Some((_, parent)) = rest.split_once('.') {
        out.push(parent.to_string());
        rest = parent;
    }
    out
}

impl SendingRule {
    pub fn new(pool: PgPool, require_verified: bool, ttl: Duration) -> Self {
        Self {
            pool,
            require_verified,
            holders: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            has_domains: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Forgets what this node cached (after a domain changed here).
    pub fn invalidate(&self) {
        self.holders.invalidate_all();
        self.has_domains.invalidate_all();
    }

    /// Checks the rule for a From domain (lower-case, validated host);
    /// `field` names the from field in the 422.
    pub async fn check(&self, tenant: TenantId, from_domain: &str, field: &str) -> AppResult<()> {
        let holders = self.holders_of(from_domain).await?;
        match self.decide(tenant, &holders) {
            Some(true) => Ok(()),
            Some(false) => Err(refused(field, from_domain)),
            None if !self.require_verified && !self.tenant_has_domains(tenant).await? => Ok(()),
            None => Err(refused(field, from_domain)),
        }
    }

    /// `Some(allowed)` from the most specific name that counts; `None` when
    /// no name counts. Another tenant's name counts when verified (or in any
    /// status when pending names may send); the tenant's own when it may
    /// send from it. On a tie the tenant's own name wins (two tenants can
    /// hold the same pending name; only one can verify it).
    fn decide(&self, tenant: TenantId, holders: &[(Uuid, String, String)]) -> Option<bool> {
        let counts = |(t, _, status): &&(Uuid, String, String)| {
            status == "verified"
                || (!self.require_verified && (*t != tenant.0 || status != "failed"))
        };
        let best = holders.iter().filter(counts).map(|h| h.1.len()).max()?;
        Some(
            holders
                .iter()
                .filter(counts)
                .any(|h| h.1.len() == best && h.0 == tenant.0),
        )
    }

    async fn holders_of(&self, from_domain: &str) -> AppResult<Holders> {
        let pool = self.pool.clone();
        let names = suffixes(from_domain);
        self.holders
            .try_get_with(from_domain.to_string(), async move {
                db::run(&pool, move |conn| {
                    Ok(Arc::new(model::holders(conn, &names)?))
                })
                .await
            })
            .await
            .map_err(unwrap_shared)
    }

    async fn tenant_has_domains(&self, tenant: TenantId) -> AppResult<bool> {
        let pool = self.pool.clone();
        self.has_domains
            .try_get_with(tenant.0, async move {
                db::run(&pool, move |conn| Ok(model::has_any(conn, tenant)?)).await
            })
            .await
            .map_err(unwrap_shared)
    }
}

fn unwrap_shared(e: Arc<AppError>) -> AppError {
    match &*e {
        AppError::Unavailable(m) => AppError::Unavailable(m.clone()),
        other => AppError::internal("domain lookup", other),
    }
}

/// `field` is the address's field (`from`, `emails[2].from`, `sender`,
/// `resent_from`); the detail names its header.
fn refused(field: &str, from_domain: &str) -> AppError {
    let header = field.rsplit('.').next().unwrap_or(field).replace('_', "-");
    AppError::Validation {
        code: "from_domain_not_allowed",
        detail: format!(
            "The {header} domain {from_domain} is not a verified sending domain of this tenant \
             (POST /v1/domains, then publish its DNS records and verify)."
        ),
        errors: vec![FieldError::new(field, "domain not allowed for this tenant")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_of_a_name() {
        assert_eq!(suffixes("a.b.c"), vec!["a.b.c", "b.c", "c"]);
        assert_eq!(suffixes("com"), vec!["com"]);
    }
}
