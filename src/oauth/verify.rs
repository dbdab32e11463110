//! Bearer access tokens for the `Principal` extractor. A token is verified
//! once (signature, `alg`, `typ`, `kid`, `iss`, `aud`, `exp`, `nbf`), its
//! client looked up in the client cache, and the resulting principal cached
//! by the SHA-256 of the token until the earlier of `exp` and the client
//! state's expiry (`auth.cache_ttl_secs`). Every refusal is the one
//! `Unauthorized` a bad API key gets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sha2::{Digest, Sha256};

use super::jwt::{self, Reject};
use super::{ClientKind, OAuthService, TokenEntry};
use crate::auth::VerifiedKey;
use crate::domain::{KeyKind, Permission, Permissions};
use crate::error::{AppError, AppResult};

pub use super::jwt::looks_like_jwt;

impl OAuthService {
    /// The principal of a bearer access token.
    pub async fn authenticate(&self, token: &str) -> AppResult<Arc<VerifiedKey>> {
        if token.len() > jwt::MAX_TOKEN_BYTES {
            return Err(AppError::Unauthorized);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let inner = self.inner();
        if let Some(entry) = inner.tokens.get(&digest).await {
            return self.admit(&entry.key);
        }
        let claims = match jwt::verify(&inner.keys.current(), token, &inner.validation) {
            Ok(c) => c,
            // A key rotated in on another node: reread the keys (at most
            // once a second), then try once more.
            Err(Reject::UnknownKid) => {
                inner.keys.reload_soon().await?;
                jwt::verify(&inner.keys.current(), token, &inner.validation)
                    .map_err(|_| AppError::Unauthorized)?
            }
            Err(_) => return Err(AppError::Unauthorized),
        };
        if claims.sub != claims.client_id {
            return Err(AppError::Unauthorized);
        }
        let client = self.client(&claims.client_id).await?;
        let tenant_matches = match client.kind {
            ClientKind::Tenant => {
                claims.tenant_id.is_some() && claims.tenant_id == client.tenant_id.map(|t| t.0)
            }
            ClientKind::Platform => claims.tenant_id.is_none(),
        };
        if !client.usable || !tenant_matches {
            return Err(AppError::Unauthorized);
        }
        // The token's scope, never more than the client holds now.
        let permissions = Permissions::new(
            claims
                .scope
                .split(' ')
                .filter_map(Permission::parse)
                .filter(|p| client.permissions.has(*p))
                .collect(),
        );
        let exp = chrono::DateTime::from_timestamp(claims.exp, 0).ok_or(AppError::Unauthorized)?;
        let left = (exp - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let key = Arc::new(VerifiedKey {
            api_key_id: client.id,
            kind: match client.kind {
                ClientKind::Platform => KeyKind::Admin,
                ClientKind::Tenant => KeyKind::Live,
            },
            tenant_id: client.tenant_id,
            tenant_suspended: client.tenant_suspended,
            permissions,
            expires_at: Some(exp),
            oauth_client: true,
            console_user: false,
        });
        let valid_until = (client.loaded_at + inner.ttl).min(Instant::now() + left);
        inner
            .tokens
            .insert(
                digest,
                Arc::new(TokenEntry {
                    key: key.clone(),
                    valid_until,
                }),
            )
            .await;
        self.admit(&key)
    }

    fn admit(&self, key: &Arc<VerifiedKey>) -> AppResult<Arc<VerifiedKey>> {
        if key.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(AppError::Unauthorized);
        }
        self.touch(key.api_key_id);
        Ok(key.clone())
    }
}
