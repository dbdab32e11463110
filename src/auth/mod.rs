//! Authentication (DESIGN §4): parse the bearer token, look the key up by its
//! public id, run one argon2id verify, then keep the verified key in memory for
//! at most `auth.cache_ttl_secs` so the steady state costs a hash-map lookup.
//! Any change that can take a key's rights away (revocation, suspension,
//! deletion) clears this node's cache at once; other nodes follow within the TTL.

pub mod extract;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

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
}

/// Why a cache fill failed: a bad key, or the database.
#[derive(Debug, Clone)]
enum Miss {
    Rejected,
    Unavailable(String),
}

impl AuthService {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        let ttl = ttl.max(Duration::from_millis(1));
        Self {
            inner: Arc::new(Inner {
                pool,
                verified: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(ttl)
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
            }),
        }
    }

    /// Verifies a bearer token. Every failure is the same `Unauthorized`.
    pub async fn authenticate(&self, token: &str) -> AppResult<Arc<VerifiedKey>> {
        let parsed = token::parse(token).ok_or(AppError::Unauthorized)?;
        let cache_key = token::cache_key(token);
        if self.inner.rejected.contains_key(&cache_key) {
            return Err(AppError::Unauthorized);
        }
        let (kind, key_id, secret) = (
            parsed.kind,
            parsed.key_id.to_string(),
            parsed.secret.to_string(),
        );
        let pool = self.inner.pool.clone();
        let proven = (self.inner.proven.clone(), cache_key);
        let argon2 = self.inner.argon2.clone();
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
        let now = Utc::now();
        if key.expires_at.is_some_and(|at| at <= now) {
            return Err(AppError::Unauthorized);
        }
        if let Ok(mut map) = self.inner.last_used.lock() {
            map.insert(key.api_key_id, now);
        }
        Ok(key)
    }

    /// Forgets every verified key on this node. Called after any change that
    /// can reduce a key's rights; cheap because such changes are rare.
    pub fn invalidate_all(&self) {
        self.inner.verified.invalidate_all();
        self.inner.rejected.invalidate_all();
        self.inner.proven.invalidate_all();
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
    secret: String,
    (proven, token_key): (moka::future::Cache<[u8; 32], Arc<str>>, [u8; 32]),
    argon2: Arc<tokio::sync::Semaphore>,
) -> Result<Arc<VerifiedKey>, Miss> {
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
        let ok = tokio::task::spawn_blocking(move || token::verify_secret(&secret, &hash))
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
    }))
}

impl VerifiedKey {
    pub fn has(&self, p: Permission) -> bool {
        self.permissions.has(p)
    }
}
