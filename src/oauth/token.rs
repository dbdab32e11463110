//! `POST /oauth/token` (RFC 6749 §4.4, client credentials): the client
//! authentication (argon2 kept off the hot path, failures counted per client
//! address), then the per-client limit, the
//! scope narrowing and the signed token. Errors are the RFC 6749 §5.2 codes
//! of [`super::form::TokenError`], never problem JSON.

use std::net::IpAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::form::{Credentials, TokenError, TokenRequest};
use super::jwt::{self, Claims};
use super::{ClientKind, ClientState, OAuthService};
use crate::auth::token::verify_secret;
use crate::domain::{Permission, Permissions};

/// Client ids and secrets longer than this are refused unread.
const MAX_CREDENTIAL_BYTES: usize = 256;

/// What the endpoint answers on success (no `Debug`: it holds the token).
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
}

/// The permissions a `scope` asks for: a subset of the client's, or all of
/// them when absent.
pub fn narrow(client: &Permissions, scope: Option<&str>) -> Result<Permissions, TokenError> {
    let Some(scope) = scope else {
        return Ok(client.clone());
    };
    let mut asked = Vec::new();
    for name in scope.split(' ').filter(|s| !s.is_empty()) {
        if asked.len() >= Permission::ALL.len() * 2 {
            return Err(TokenError::InvalidScope("Too many scope values.".into()));
        }
        let p = Permission::parse(name)
            .ok_or_else(|| TokenError::InvalidScope(format!("Unknown scope '{name}'.")))?;
        if !client.has(p) {
            return Err(TokenError::InvalidScope(format!(
                "The client does not hold '{name}'."
            )));
        }
        asked.push(p);
    }
    if asked.is_empty() {
        return Err(TokenError::InvalidScope("The scope is empty.".into()));
    }
    Ok(Permissions::new(asked))
}

impl OAuthService {
    /// Authenticates the client (argon2 only for a secret not seen before;
    /// failures counted against `from`, the caller's address), applies the
    /// per-client limit, narrows the scope and signs a token.
    pub async fn issue(
        &self,
        req: TokenRequest,
        from: Option<IpAddr>,
    ) -> Result<Issued, TokenError> {
        let client = self.authenticate_client(&req.credentials, from).await?;
        if req.grant_type != "client_credentials" {
            return Err(TokenError::UnsupportedGrantType);
        }
        let permissions = narrow(&client.permissions, req.scope.as_deref())?;
        if client.tenant_suspended {
            return Err(TokenError::InvalidGrant(
                "The client's tenant is suspended.",
            ));
        }
        let scope = permissions.names().join(" ");
        let inner = self.inner();
        let claims = Claims::new(
            &inner.settings,
            &req.credentials.client_id,
            match client.kind {
                ClientKind::Tenant => client.tenant_id.map(|t| t.0),
                ClientKind::Platform => None,
            },
            scope.clone(),
        );
        let mut ring = inner.keys.current();
        if ring.signer.is_none() {
            inner
                .keys
                .reload_soon()
                .await
                .map_err(|_| TokenError::Unavailable)?;
            ring = inner.keys.current();
        }
        let access_token = match jwt::sign(&ring, &claims) {
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                tracing::error!(error = %e, "signing an access token failed");
                return Err(TokenError::Unavailable);
            }
            None => return Err(TokenError::Unavailable),
        };
        self.touch(client.id);
        Ok(Issued {
            access_token,
            expires_in: inner.settings.token_ttl_secs,
            scope,
        })
    }

    /// The client, once its secret is right; then its per-client limit.
    /// Every refusal before that (unknown or revoked client, wrong secret)
    /// counts against the caller's address, and an address past
    /// `auth.failed_per_ip_per_minute` gets `slow_down` before any lookup,
    /// unless this node has seen the pair pass before (a real client behind
    /// the same address keeps working). So a stranger holding a public
    /// `client_id` spends neither the client's limit nor, past their
    /// address's budget, any database or argon2 time.
    async fn authenticate_client(
        &self,
        c: &Credentials,
        from: Option<IpAddr>,
    ) -> Result<Arc<ClientState>, TokenError> {
        let refused = TokenError::InvalidClient { basic: c.basic };
        if c.client_id.is_empty()
            || c.client_id.len() > MAX_CREDENTIAL_BYTES
            || c.secret.is_empty()
            || c.secret.len() > MAX_CREDENTIAL_BYTES
        {
            return Err(refused);
        }
        let inner = self.inner();
        let mut h = Sha256::new();
        h.update(c.client_id.as_bytes());
        h.update([0u8]);
        h.update(c.secret.as_bytes());
        let proof: [u8; 32] = h.finalize().into();
        let proven = inner.proven.get(&proof).await;
        if proven.is_none() {
            if let Some(retry_after_secs) = from.and_then(|ip| inner.failed.blocked(ip)) {
                crate::metrics::limited("failed_auth");
                return Err(TokenError::SlowDown { retry_after_secs });
            }
        }
        let failed = || async move {
            if let Some(ip) = from {
                inner.failed.failed_now(ip).await;
            }
        };
        let client = self.client(&c.client_id).await.map_err(|e| {
            tracing::warn!(error = %e, "token request: client lookup failed");
            TokenError::Unavailable
        })?;
        if !client.usable {
            failed().await;
            return Err(refused);
        }
        let hash = client.secret_hash.as_str();
        let ok = if proven.as_deref() == Some(hash) {
            true
        } else if inner.rejected.get(&proof).await.as_deref() == Some(hash) {
            false
        } else {
            let _permit = inner
                .argon2
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| TokenError::Unavailable)?;
            let (secret, stored) = (c.secret.clone(), client.secret_hash.clone());
            tokio::task::spawn_blocking(move || verify_secret(&secret, &stored))
                .await
                .unwrap_or(false)
        };
        if !ok {
            failed().await;
            inner.rejected.insert(proof, hash.into()).await;
            return Err(refused);
        }
        if proven.as_deref() != Some(hash) {
            inner.proven.insert(proof, hash.into()).await;
        }
        let per_minute = inner.settings.token_requests_per_minute;
        if per_minute > 0 {
            let state = crate::limits::api::per_minute(
                &inner.rates,
                client.id,
                "token_requests_per_minute",
                per_minute,
            )
            .await;
            if let Some(retry_after_secs) = state.retry_after_secs {
                crate::metrics::limited("oauth_token");
                return Err(TokenError::SlowDown { retry_after_secs });
            }
        }
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_narrows_and_never_widens() {
        let held = Permissions::new(vec![Permission::Send, Permission::EmailsRead]);
        assert_eq!(narrow(&held, None).unwrap(), held);
        assert_eq!(narrow(&held, Some("send")).unwrap().names(), vec!["send"]);
        assert!(matches!(
            narrow(&held, Some("send tenants:write")),
            Err(TokenError::InvalidScope(_))
        ));
        assert!(matches!(
            narrow(&held, Some("bogus")),
            Err(TokenError::InvalidScope(_))
        ));
        assert!(matches!(
            narrow(&held, Some("")),
            Err(TokenError::InvalidScope(_))
        ));
        let many = vec!["send"; 100].join(" ");
        assert!(matches!(
            narrow(&held, Some(&many)),
            Err(TokenError::InvalidScope(_))
        ));
    }
}
