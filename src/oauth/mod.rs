//! OAuth 2.0 client credentials (issue 15, API.md "OAuth 2.0 client
//! credentials"): clients (`clients`), `POST /oauth/token` (`token`), RFC
//! 9068 access tokens signed with Ed25519 (`jwt`, `signing`), bearer token
//! checks for the `Principal` extractor (`verify`), JWKS and routes.
//!
//! Costs: a token is verified once (signature + claims) and the resulting
//! principal cached by a SHA-256 of the token, so the steady state costs what
//! a cached API key costs. Client rows are cached for `auth.cache_ttl_secs`,
//! which bounds how long a revoked client's tokens keep working on another
//! node; this node forgets them at once. argon2 runs for a client secret
//! only the first time it is seen (then its hash is remembered, as for keys).

pub mod clients;
pub mod form;
pub mod jwt;
pub mod model;
pub mod routes;
pub mod signing;
pub mod token;
pub mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::PgConnection;
use uuid::Uuid;

use crate::auth::failures::FailedAuthLimiter;
use crate::auth::VerifiedKey;
use crate::config::Settings;
use crate::crypto::Vault;
use crate::db::{self, PgPool};
use crate::domain::{Permissions, TenantId};
use crate::error::{AppError, AppResult};

/// Platform clients act as admin keys; tenant clients as that tenant's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    Platform,
    Tenant,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Platform => "platform",
            ClientKind::Tenant => "tenant",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "platform" => Some(ClientKind::Platform),
            "tenant" => Some(ClientKind::Tenant),
            _ => None,
        }
    }
}

/// A client row as the caches hold it (`usable` false: revoked, gone, or
/// its tenant deleted).
pub(crate) struct ClientState {
    pub id: Uuid,
    pub kind: ClientKind,
    pub tenant_id: Option<TenantId>,
    pub tenant_suspended: bool,
    pub permissions: Permissions,
    pub secret_hash: String,
    pub usable: bool,
    pub loaded_at: Instant,
}

/// A verified token as cached: valid until the earlier of its `exp` and the
/// expiry of the client state it was checked against.
#[derive(Debug)]
pub(crate) struct TokenEntry {
    pub key: Arc<VerifiedKey>,
    pub valid_until: Instant,
}

struct TokenExpiry;

impl moka::Expiry<[u8; 32], Arc<TokenEntry>> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<TokenEntry>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.valid_until.saturating_duration_since(created_at))
    }
}

#[derive(Clone)]
pub struct OAuthService {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub pool: PgPool,
    pub settings: crate::config::OAuthSettings,
    pub ttl: Duration,
    pub keys: signing::KeyStore,
    pub validation: jsonwebtoken::Validation,
    /// SHA-256 of a bearer token → the principal it proved.
    pub tokens: moka::future::Cache<[u8; 32], Arc<TokenEntry>>,
    /// `client_id` → the client row, for `auth.cache_ttl_secs`.
    pub clients: moka::future::Cache<String, Arc<ClientState>>,
    /// SHA-256 of `client_id` and secret → the hash the secret passed
    /// against: later token requests skip argon2 while the row holds it.
    pub proven: moka::future::Cache<[u8; 32], Arc<str>>,
    /// SHA-256 of `client_id` and secret → the hash it failed against:
    /// repeating a wrong secret costs no argon2 run while the row holds it.
    pub rejected: moka::future::Cache<[u8; 32], Arc<str>>,
    pub argon2: Arc<tokio::sync::Semaphore>,
    /// `oauth.token_requests_per_minute`, counted per client once its
    /// secret has been checked, so strangers cannot spend it: a window
    /// budget per client and minute shared by every node.
    pub rates: crate::cluster::rate::Rates,
    /// Failed client authentications per client address
    /// (`auth.failed_per_ip_per_minute`, as for API keys).
    pub failed: FailedAuthLimiter,
    pub last_used: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

impl OAuthService {
    /// `rates`: the node's cluster-wide rates (token requests per client).
    pub fn new(
        pool: PgPool,
        vault: Vault,
        settings: &Settings,
        rates: crate::cluster::rate::Rates,
    ) -> Self {
        let ttl = Duration::from_secs(settings.auth.cache_ttl_secs).max(Duration::from_millis(1));
        Self {
            inner: Arc::new(Inner {
                keys: signing::KeyStore::new(pool.clone(), vault),
                pool,
                validation: jwt::validation(&settings.oauth),
                settings: settings.oauth.clone(),
                ttl,
                tokens: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .expire_after(TokenExpiry)
                    .support_invalidation_closures()
                    .build(),
                clients: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(ttl)
                    .build(),
                proven: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_idle(Duration::from_secs(3600))
                    .support_invalidation_closures()
                    .build(),
                rejected: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(ttl)
                    .build(),
                argon2: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
                )),
                rates,
                failed: FailedAuthLimiter::new(settings.auth.failed_per_ip_per_minute),
                last_used: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Rereads the signing keys now (the background refresh does this every
    /// [`KEY_REFRESH`]; tokens with an unknown `kid` trigger it too).
    pub async fn reload_keys(&self) -> AppResult<()> {
        self.inner.keys.reload().await
    }

    /// The published keys (`GET /.well-known/jwks.json`).
    pub async fn jwks(&self) -> AppResult<Arc<signing::Jwks>> {
        if let Some(jwks) = self.inner.keys.current().jwks.clone() {
            return Ok(jwks);
        }
        self.inner.keys.reload_soon().await?;
        self.inner
            .keys
            .current()
            .jwks
            .clone()
            .ok_or_else(|| AppError::Unavailable("oauth signing keys not loaded".into()))
    }

    /// The client row behind `client_id`, cached for `auth.cache_ttl_secs`.
    pub(crate) async fn client(&self, client_id: &str) -> AppResult<Arc<ClientState>> {
        let pool = self.inner.pool.clone();
        let id = client_id.to_string();
        self.inner
            .clients
            .try_get_with(client_id.to_string(), async move {
                let found =
                    db::run(&pool, move |conn| Ok(model::find_by_client_id(conn, &id)?)).await?;
                Ok::<_, AppError>(Arc::new(client_state(found)))
            })
            .await
            .map_err(|e| match e.as_ref() {
                AppError::Unavailable(why) => AppError::Unavailable(why.clone()),
                other => AppError::Unavailable(other.to_string()),
            })
    }

    /// Forgets a revoked client on this node at once (other nodes: within
    /// `auth.cache_ttl_secs`).
    pub async fn forget_client(&self, id: Uuid, client_id: &str) {
        self.inner.clients.invalidate(client_id).await;
        let _ = self
            .inner
            .tokens
            .invalidate_entries_if(move |_, v| v.key.api_key_id == id);
    }

    pub(crate) fn touch(&self, id: Uuid) {
        if let Ok(mut map) = self.inner.last_used.lock() {
            map.insert(id, Utc::now());
        }
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
            Ok(model::record_last_used(conn, ids, times)?)
        })
        .await
    }

    /// Background work of the API role: `last_used_at` every `flush`, and
    /// the signing keys every 30 s (a rotation elsewhere, retirements).
    pub fn spawn_background(&self, flush: Duration) -> Vec<tokio::task::JoinHandle<()>> {
        let (a, b) = (self.clone(), self.clone());
        vec![
            db::every(flush, "flushing oauth client last_used_at", move || {
                let this = a.clone();
                async move { this.flush_last_used().await.map(|_| ()) }
            }),
            db::every(KEY_REFRESH, "reloading oauth signing keys", move || {
                let this = b.clone();
                async move { this.inner.keys.reload().await }
            }),
        ]
    }
}

/// How often each node rereads the signing keys.
pub const KEY_REFRESH: Duration = Duration::from_secs(30);

fn client_state(found: Option<(model::ClientRow, Option<String>)>) -> ClientState {
    let loaded_at = Instant::now();
    match found {
        Some((row, tenant_status)) => {
            let kind = ClientKind::parse(&row.kind).unwrap_or(ClientKind::Tenant);
            ClientState {
                id: row.id,
                kind,
                tenant_id: row.tenant_id.map(TenantId),
                tenant_suspended: tenant_status.as_deref() == Some("suspended"),
                permissions: Permissions::from_stored(&row.permissions),
                usable: row.revoked_at.is_none() && tenant_status.as_deref() != Some("deleted"),
                secret_hash: row.secret_hash,
                loaded_at,
            }
        }
        None => ClientState {
            id: Uuid::nil(),
            kind: ClientKind::Tenant,
            tenant_id: None,
            tenant_suspended: false,
            permissions: Permissions::default(),
            secret_hash: String::new(),
            usable: false,
            loaded_at,
        },
    }
}

/// The audit entry of a client change (`oauth_client.created`,
/// `oauth_client.revoked`), written inside the transaction of the change.
pub fn audit_hook(
    conn: &mut PgConnection,
    action: &'static str,
    actor: &crate::audit::Actor,
    tenant: Option<TenantId>,
    target: Uuid,
) -> AppResult<()> {
    crate::audit::record(
        conn,
        actor,
        action,
        tenant.map(|t| t.0),
        target,
        serde_json::json!({}),
    )?;
    Ok(())
}
