//! Authentication (DESIGN §4): parse the bearer token, look the key up by its
//! public id, run one argon2id verify, then keep the verified key in memory for
//! at most `auth.cache_ttl_secs` so the steady state costs a hash-map lookup.
//! Any change that can take a key's rights away clears, on this node and at
//! once, only the entries it concerns: a revoked key's, or a suspended or
//! deleted tenant's (other tenants keep their cache hits and never re-run
//! argon2 because of it); other nodes follow within the TTL.

pub mod extract;
pub mod failures;
pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::Secret;
use crate::db::{self, PgPool};
use crate::domain::{KeyKind, Permission, Permissions, TenantId};
use crate::error::{AppError, AppResult};
use crate::keys::model as keys_db;

pub use extract::Principal;

/// A key that passed verification, as cached.
#[derive(Clone, Debug)]
pub struct VerifiedKey {
    pub api_key_id: Uuid,
    pub kind: KeyKind,
    pub tenant_id: Option<TenantId>,
    pub tenant_suspended: bool,
    pub permissions: Permissions,
    pub expires_at: Option<DateTime<Utc>>,
    /// An OAuth access token (`src/oauth/verify.rs`) rather than an API key.
    pub oauth_client: bool,
    /// A web console session (`src/console/`): `api_key_id` is the user's id.
    pub console_user: bool,
}

#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    verified: moka::future::Cache<[u8; 32], Arc<VerifiedKey>>,
    /// Tokens that failed verification recently: repeated wrong secrets for a
    /// real key id must not each cost an argon2 run.
    rejected: moka::future::Cache<[u8; 32], ()>,
    /// Tokens whose secret already passed argon2, with the stored hash it
    /// passed against. When a verified entry expires, the refill still
    /// re-reads the key row (revocation, expiry, suspension, permissions
    /// apply within the TTL as before) but skips argon2 while the row holds
    /// that same hash: a busy key no longer costs a ~30 ms verify, and its
    /// requests a stall behind it, every TTL. Cleared with the other caches.
    proven: moka::future::Cache<[u8; 32], Arc<str>>,
    /// At most half the cores run argon2 at once: a flood of wrong secrets
    /// for a real key id (each a new token, so never in `rejected`) queues
    /// here instead of taking every core from the requests that hit the cache.
    argon2: Arc<tokio::sync::Semaphore>,
    last_used: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    failed: failures::FailedAuthLimiter,
    counts: Arc<Counts>,
}

/// What authentication cost on this node since start (tests and benchmarks
/// read these; the argon2 runs are also the metric
/// `postline_auth_argon2_verifications_total`).
#[derive(Default)]
struct Counts {
    lookups: AtomicU64,
    argon2: AtomicU64,
}

/// Why a cache fill failed: a bad key, or the database.
#[derive(Debug, Clone)]
enum Miss {
    Rejected,
    Unavailable(String),
}

impl AuthService {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self::with_failed_limit(pool, ttl, 0)
    }

    /// As [`AuthService::new`], with at most `failed_per_ip_per_minute`
    /// failed authentications per client address (0 = no limit).
    pub fn with_failed_limit(pool: PgPool, ttl: Duration, failed_per_ip_per_minute: u32) -> Self {
        let ttl = ttl.max(Duration::from_millis(1));
        Self {
            inner: Arc::new(Inner {
                pool,
                verified: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(ttl)
                    .support_invalidation_closures()
                    .build(),
                rejected: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(ttl)
                    .build(),
                proven: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_idle(PROVEN_IDLE)
                    .build(),
                argon2: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
                )),
                last_used: Mutex::new(HashMap::new()),
                failed: failures::FailedAuthLimiter::new(failed_per_ip_per_minute),
                counts: Arc::default(),
            }),
        }
    }

    /// The failed-authentication throttle per client address (shared with
    /// the other nodes at start, `cluster::failures`).
    pub fn failed_limiter(&self) -> &failures::FailedAuthLimiter {
        &self.inner.failed
    }

    /// Verifies a bearer token. Every failure is the same `Unauthorized`.
    pub async fn authenticate(&self, token: &str) -> AppResult<Arc<VerifiedKey>> {
        self.authenticate_from(token, None).await
    }

    /// [`AuthService::authenticate`] for a request from `client`: a
    /// well-formed token that fails counts against the address, and an
    /// address over `auth.failed_per_ip_per_minute` gets 429 for any token
    /// this node has not verified before (neither cached nor proven),
    /// before any database lookup.
    /// Malformed tokens cost nothing and are not counted.
    pub async fn authenticate_from(
        &self,
        token: &str,
        client: Option<IpAddr>,
    ) -> AppResult<Arc<VerifiedKey>> {
        let parsed = token::parse(token).ok_or(AppError::Unauthorized)?;
        let cache_key = token::cache_key(token);
        let cached = self.inner.verified.get(&cache_key).await;
        // A token whose secret passed argon2 here before (proven) is a real
        // key, not part of a flood: it is let through to its lookup.
        if cached.is_none() && !self.inner.proven.contains_key(&cache_key) {
            if let Some(retry_after_secs) = client.and_then(|ip| self.inner.failed.blocked(ip)) {
                crate::metrics::limited("failed_auth");
                return Err(AppError::TooManyRequests {
                    code: "rate_limited",
                    detail: "Too many failed authentications from this address.".into(),
                    retry_after_secs,
                });
            }
        }
        let result = self.verify(parsed, cache_key, cached).await;
        if let (Err(AppError::Unauthorized), Some(ip)) = (&result, client) {
            self.inner.failed.failed_now(ip).await;
        }
        result
    }

    async fn verify(
        &self,
        parsed: token::ParsedToken<'_>,
        cache_key: [u8; 32],
        cached: Option<Arc<VerifiedKey>>,
    ) -> AppResult<Arc<VerifiedKey>> {
        if let Some(key) = cached {
            return self.admit(key);
        }
        if self.inner.rejected.contains_key(&cache_key) {
            return Err(AppError::Unauthorized);
        }
        // The one copy of the secret that outlives this call (it moves to
        // the blocking pool for argon2) is a `Secret`: wiped when dropped.
        let (kind, key_id, secret) = (
            parsed.kind,
            parsed.key_id.to_string(),
            Secret::new(parsed.secret),
        );
        let pool = self.inner.pool.clone();
        let proven = (self.inner.proven.clone(), cache_key);
        let argon2 = (self.inner.argon2.clone(), self.inner.counts.clone());
        // Concurrent misses for one token share a single lookup and argon2 run.
        let result = self
            .inner
            .verified
            .try_get_with(cache_key, async move {
                load_and_verify(pool, kind, key_id, secret, proven, argon2).await
            })
            .await;
        let key = match result {
            Ok(key) => key,
            Err(miss) => {
                return match miss.as_ref() {
                    Miss::Rejected => {
                        self.inner.rejected.insert(cache_key, ()).await;
                        Err(AppError::Unauthorized)
                    }
                    Miss::Unavailable(why) => Err(AppError::Unavailable(why.clone())),
                }
            }
        };
        self.admit(key)
    }

    /// The checks a cached entry still needs: expiry, and `last_used_at`.
    fn admit(&self, key: Arc<VerifiedKey>) -> AppResult<Arc<VerifiedKey>> {
        let now = Utc::now();
        if key.expires_at.is_some_and(|at| at <= now) {
            return Err(AppError::Unauthorized);
        }
        if let Ok(mut map) = self.inner.last_used.lock() {
            map.insert(key.api_key_id, now);
        }
        Ok(key)
    }

    /// Forgets every verified key on this node (e.g. after a master-key
    /// rotation). Revocation and tenant changes use the narrow forms below.
    pub fn invalidate_all(&self) {
        self.inner.verified.invalidate_all();
        self.inner.rejected.invalidate_all();
        self.inner.proven.invalidate_all();
    }

    /// Forgets the verified entries of one key (revoked). Its next request
    /// re-reads the row and is refused; no other key is touched. The proven
    /// secret may stay: it only ever skips argon2 for a row that still holds
    /// that hash and is not revoked.
    pub fn invalidate_key(&self, api_key_id: Uuid) {
        self.invalidate_where(move |k| k.api_key_id == api_key_id);
    }

    /// Forgets the verified entries of one tenant's keys (suspended,
    /// reactivated, deleted): their next requests re-read the key row and
    /// the tenant status. Other tenants keep their entries.
    pub fn invalidate_tenant(&self, tenant: TenantId) {
        self.invalidate_where(move |k| k.tenant_id == Some(tenant));
    }

    fn invalidate_where(&self, pred: impl Fn(&VerifiedKey) -> bool + Send + Sync + 'static) {
        if let Err(e) = self
            .inner
            .verified
            .invalidate_entries_if(move |_, k| pred(k))
        {
            // Only if the cache was built without closure support: fall back
            // to the safe side.
            tracing::warn!(error = %e, "narrow auth cache invalidation failed; clearing all");
            self.inner.verified.invalidate_all();
        }
    }

    /// Key rows read from the database to authenticate (cache misses that
    /// got past the parse and the rejected cache).
    pub fn key_lookups(&self) -> u64 {
        self.inner.counts.lookups.load(Ordering::Relaxed)
    }

    /// argon2id verifications run on this node.
    pub fn argon2_verifications(&self) -> u64 {
        self.inner.counts.argon2.load(Ordering::Relaxed)
    }

    /// Writes the collected `last_used_at` values in one statement.
    pub async fn flush_last_used(&self) -> AppResult<usize> {
        let batch: Vec<(Uuid, DateTime<Utc>)> = match self.inner.last_used.lock() {
            Ok(mut map) => map.drain().collect(),
            Err(_) => return Ok(0),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let (ids, times): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        db::run(&self.inner.pool, move |conn| {
            Ok(keys_db::record_last_used(conn, ids, times)?)
        })
        .await
    }

    /// Flushes `last_used_at` every `every` until the returned handle is aborted.
    pub fn spawn_last_used_flusher(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        crate::db::every(every, "flushing api key last_used_at", move || {
            let this = this.clone();
            async move { this.flush_last_used().await.map(|_| ()) }
        })
    }
}

/// How long a proven secret is remembered without use.
const PROVEN_IDLE: Duration = Duration::from_secs(3600);

async fn load_and_verify(
    pool: PgPool,
    kind: KeyKind,
    key_id: String,
    secret: Secret,
    (proven, token_key): (moka::future::Cache<[u8; 32], Arc<str>>, [u8; 32]),
    (argon2, counts): (Arc<tokio::sync::Semaphore>, Arc<Counts>),
) -> Result<Arc<VerifiedKey>, Miss> {
    counts.lookups.fetch_add(1, Ordering::Relaxed);
    let found = db::run(&pool, move |conn| {
        Ok(keys_db::find_for_auth(conn, &key_id)?)
    })
    .await
    .map_err(|e| match e {
        AppError::Unavailable(why) => Miss::Unavailable(why),
        other => Miss::Unavailable(other.to_string()),
    })?;
    let (row, tenant_status) = found.ok_or(Miss::Rejected)?;
    if row.kind != kind.as_str()
        || row.revoked_at.is_some()
        || tenant_status.as_deref() == Some("deleted")
    {
        return Err(Miss::Rejected);
    }
    let known = proven.get(&token_key).await;
    if known.as_deref() != Some(row.secret_hash.as_str()) {
        let hash = row.secret_hash.clone();
        let _permit = argon2
            .acquire_owned()
            .await
            .map_err(|_| Miss::Unavailable("auth shutting down".into()))?;
        counts.argon2.fetch_add(1, Ordering::Relaxed);
        crate::metrics::argon2_verification();
        let ok = tokio::task::spawn_blocking(move || token::verify_secret(secret.expose(), &hash))
            .await
            .unwrap_or(false);
        if !ok {
            return Err(Miss::Rejected);
        }
        proven
            .insert(token_key, row.secret_hash.as_str().into())
            .await;
    }
    Ok(Arc::new(VerifiedKey {
        api_key_id: row.id,
        kind,
        tenant_id: row.tenant_id.map(TenantId),
        tenant_suspended: tenant_status.as_deref() == Some("suspended"),
        permissions: Permissions::from_stored(&row.permissions),
        expires_at: row.expires_at,
        oauth_client: false,
        console_user: false,
    }))
}

impl VerifiedKey {
    pub fn has(&self, p: Permission) -> bool {
        self.permissions.has(p)
    }
}
