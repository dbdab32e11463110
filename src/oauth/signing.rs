//! The issuer's Ed25519 signing keys: generated with ring, the PKCS#8
//! private key sealed with the Vault (bound to its row and column), `kid` =
//! the RFC 7638 JWK thumbprint. The newest key without `retires_at` signs;
//! every key not yet retired verifies and is in the JWKS, so a rotation
//! overlaps: tokens signed by the old key keep working until it retires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use diesel::{Connection, PgConnection};
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::model::{self, NewSigningKey, SigningKeyRow};
use crate::crypto::Vault;
use crate::db::{self, PgPool};
use crate::error::{AppError, AppResult};

/// The AEAD context of a sealed private key: its row and column.
pub fn private_key_context(id: Uuid) -> String {
    format!("oauth_signing_keys:{id}:private_key")
}

/// The key that signs new tokens. Never printed.
pub struct Signer {
    pub kid: String,
    pub key: EncodingKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({}, [redacted])", self.kid)
    }
}

/// One published key, as RFC 8037 puts an Ed25519 key in a JWK.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Jwk {
    pub kty: &'static str,
    pub crv: &'static str,
    pub x: String,
    pub kid: String,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub use_: &'static str,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// A public key and when it stops verifying (`None`: current).
pub struct Verifier {
    pub key: DecodingKey,
    pub retires_at: Option<DateTime<Utc>>,
}

/// What this node knows of the keys at one moment.
#[derive(Default)]
pub struct Ring {
    pub signer: Option<Signer>,
    pub verifiers: HashMap<String, Verifier>,
    pub jwks: Option<Arc<Jwks>>,
}

fn jwk(public: &[u8]) -> Jwk {
    let x = URL_SAFE_NO_PAD.encode(public);
    // RFC 7638: members in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    Jwk {
        kty: "OKP",
        crv: "Ed25519",
        x,
        kid,
        alg: "EdDSA",
        use_: "sig",
    }
}

/// Generates a key and inserts it sealed; returns its row id and kid.
fn create(conn: &mut PgConnection, vault: &Vault) -> AppResult<(Uuid, String)> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| AppError::internal("oauth", "cannot generate an Ed25519 key"))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| AppError::internal("oauth", "generated key does not parse"))?;
    let public = pair.public_key().as_ref().to_vec();
    let id = Uuid::new_v4();
    let kid = jwk(&public).kid;
    let sealed = vault.seal(pkcs8.as_ref(), &private_key_context(id));
    model::insert_signing_key(
        conn,
        &NewSigningKey {
            id,
            kid: &kid,
            private_key_enc: &sealed,
            public_key: &public,
        },
    )?;
    Ok((id, kid))
}

/// Creates the first signing key unless one exists (safe across nodes).
pub fn ensure(conn: &mut PgConnection, vault: &Vault) -> AppResult<()> {
    conn.transaction(|conn| {
        model::lock_signing_keys(conn)?;
        let live = model::live_signing_keys(conn)?;
        if !live.iter().any(|k| k.retires_at.is_none()) {
            let (_, kid) = create(conn, vault)?;
            tracing::info!(kid = %kid, "oauth signing key created");
        }
        Ok(())
    })
}

/// What `postline oauth rotate-key` did.
#[derive(Debug)]
pub struct Rotation {
    pub kid: String,
    pub retiring: usize,
    pub retires_at: DateTime<Utc>,
    pub purged: usize,
}

/// A new signing key; the current ones verify until `retires_at`, and keys
/// retired more than a day ago are deleted.
pub fn rotate(
    conn: &mut PgConnection,
    vault: &Vault,
    retires_at: DateTime<Utc>,
) -> AppResult<Rotation> {
    conn.transaction(|conn| {
        model::lock_signing_keys(conn)?;
        let (id, kid) = create(conn, vault)?;
        let retiring = model::retire_others(conn, id, retires_at)?;
        let purged = model::purge_retired(conn, Utc::now() - chrono::Duration::days(1))?;
        Ok(Rotation {
            kid,
            retiring,
            retires_at,
            purged,
        })
    })
}

fn build(rows: Vec<SigningKeyRow>, vault: &Vault) -> AppResult<Ring> {
    let mut ring = Ring::default();
    let mut keys = Vec::new();
    for row in rows {
        if ring.signer.is_none() && row.retires_at.is_none() {
            let der = vault
                .open(&row.private_key_enc, &private_key_context(row.id))
                .map_err(|e| AppError::internal("oauth signing key", e))?;
            ring.signer = Some(Signer {
                kid: row.kid.clone(),
                key: EncodingKey::from_ed_der(&der),
            });
        }
        ring.verifiers.insert(
            row.kid.clone(),
            Verifier {
                key: DecodingKey::from_ed_der(&row.public_key),
                retires_at: row.retires_at,
            },
        );
        keys.push(jwk(&row.public_key));
    }
    ring.jwks = Some(Arc::new(Jwks { keys }));
    Ok(ring)
}

/// This node's copy of the keys, reloaded in the background and when a
/// token names a kid it does not know (at most once per second).
pub struct KeyStore {
    pool: PgPool,
    vault: Vault,
    ring: RwLock<Arc<Ring>>,
    last_reload: Mutex<Option<Instant>>,
    reloading: tokio::sync::Mutex<()>,
}

/// The least time between two reloads triggered by requests.
const RELOAD_GAP: Duration = Duration::from_secs(1);

impl KeyStore {
    pub fn new(pool: PgPool, vault: Vault) -> Self {
        Self {
            pool,
            vault,
            ring: RwLock::new(Arc::new(Ring::default())),
            last_reload: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    pub fn current(&self) -> Arc<Ring> {
        self.ring
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Reads the keys (creating the first one if there is none).
    pub async fn reload(&self) -> AppResult<()> {
        let (pool, vault) = (self.pool.clone(), self.vault.clone());
        let ring = db::run(&pool, move |conn| {
            let mut rows = model::live_signing_keys(conn)?;
            if !rows.iter().any(|k| k.retires_at.is_none()) {
                ensure(conn, &vault)?;
                rows = model::live_signing_keys(conn)?;
            }
            build(rows, &vault)
        })
        .await?;
        if let Ok(mut at) = self.last_reload.lock() {
            *at = Some(Instant::now());
        }
        match self.ring.write() {
            Ok(mut r) => *r = Arc::new(ring),
            Err(e) => *e.into_inner() = Arc::new(ring),
        }
        Ok(())
    }

    /// Reloads unless a reload was tried less than a second ago (a failed
    /// one too, so a database outage is not retried by every request);
    /// concurrent callers wait for one reload. True when it reloaded.
    pub async fn reload_soon(&self) -> AppResult<bool> {
        let _one = self.reloading.lock().await;
        {
            let Ok(mut at) = self.last_reload.lock() else {
                return Ok(false);
            };
            if at.is_some_and(|t| t.elapsed() < RELOAD_GAP) {
                return Ok(false);
            }
            *at = Some(Instant::now());
        }
        self.reload().await.map(|_| true)
    }
}
