//! The `Principal` extractor: who is calling, checked once per request.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};

use actix_web::HttpMessage;

use super::VerifiedKey;
use crate::config::Secret;
use crate::domain::{KeyKind, Permission, TenantId};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// The authenticated caller. Tenant keys of a suspended tenant never get here
/// (403 `tenant_suspended`).
#[derive(Clone, Debug)]
pub struct Principal(pub Arc<VerifiedKey>);

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.0.kind == KeyKind::Admin
    }

    /// An admin route: tenant keys get 403 `admin_only`, then the permission is checked.
    pub fn require_admin(&self, p: Permission) -> AppResult<()> {
        if !self.is_admin() {
            return Err(AppError::forbidden(
                "admin_only",
                "This route needs an admin key.",
            ));
        }
        self.require(p)
    }

    pub fn require(&self, p: Permission) -> AppResult<()> {
        if self.0.has(p) {
            Ok(())
        } else {
            Err(AppError::forbidden(
                "insufficient_permission",
                format!("This key lacks the '{}' permission.", p.as_str()),
            ))
        }
    }

    /// The tenant of a tenant key (`None` for admin keys).
    pub fn tenant(&self) -> Option<TenantId> {
        self.0.tenant_id
    }
}

/// `requests_per_minute` (DESIGN §6): a tenant key counts against its
/// tenant's limit (or `limits.default_requests_per_minute`); an admin key
/// against `limits.admin_requests_per_minute` for itself. The state goes into
/// the request so the response carries the RateLimit headers; admitted tenant
/// requests are counted for usage.
async fn rate_limit(state: &AppState, req: &HttpRequest, key: &VerifiedKey) -> AppResult<()> {
    use crate::limits::api::{admit, Subject};
    let subject = match key.tenant_id {
        Some(tenant) => Subject::Tenant(tenant),
        None => Subject::AdminKey(key.api_key_id),
    };
    let (rate, refused) = admit(state, subject).await?;
    if let Some(rate) = rate {
        req.extensions_mut().insert(rate);
    }
    refused.map_or(Ok(()), Err)
}

/// The client address that failed authentications are counted against: the
/// TCP peer, or with `auth.trust_x_forwarded_for` the last (rightmost)
/// address of `X-Forwarded-For` — the one the proxy in front of Postline
/// appended; earlier entries are whatever the client wrote and are ignored.
pub(crate) fn client_ip(req: &HttpRequest, trust_forwarded: bool) -> Option<IpAddr> {
    if trust_forwarded {
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .last()
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    req.peer_addr().map(|a| a.ip())
}

/// A bearer credential as the API and SMTP submission take it: an OAuth
/// access token (JWT-shaped: src/oauth/verify.rs) or an API key (the auth
/// cache; failures counted against `client`).
pub async fn credential(
    state: &AppState,
    token: &str,
    client: Option<IpAddr>,
) -> AppResult<Arc<VerifiedKey>> {
    if crate::oauth::verify::looks_like_jwt(token) {
        state.oauth.authenticate(token).await
    } else {
        state.auth.authenticate_from(token, client).await
    }
}

const NO_KEY: &str = "No API key was sent: send it as `Authorization: Bearer <key>`.";
const NOT_BEARER: &str = "The Authorization header must use the Bearer scheme: \
     `Authorization: Bearer <key>` (the word `Bearer`, a space, then the key).";

/// The bearer token, held as a [`Secret`] while the future awaits. On the
/// Postmark-compatible routes (`/email`, `/email/batch`) the key comes in
/// Postmark's `X-Postmark-Server-Token` header instead. Without one, or in
/// another scheme, the error says how to send it (a wrong key still gets
/// the one `unauthorized` answer).
fn bearer(req: &HttpRequest) -> Result<Secret, AppError> {
    if matches!(req.path(), "/email" | "/email/batch") {
        if let Some(v) = req.headers().get("x-postmark-server-token") {
            return v
                .to_str()
                .map(|t| Secret::new(t.trim()))
                .map_err(|_| AppError::Unauthorized);
        }
    }
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(AppError::CredentialMissing(NO_KEY))?
        .to_str()
        .map_err(|_| AppError::CredentialMissing(NOT_BEARER))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    match (scheme.eq_ignore_ascii_case("bearer"), token.trim()) {
        (true, "") => Err(AppError::CredentialMissing(NO_KEY)),
        (true, token) => Ok(Secret::new(token)),
        (false, _) => Err(AppError::CredentialMissing(NOT_BEARER)),
    }
}

impl FromRequest for Principal {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer(req);
        let req = req.clone();
        Box::pin(async move {
            let state =
                state.ok_or_else(|| AppError::internal("auth", "AppState not registered"))?;
            let token = token?;
            let client = client_ip(&req, state.settings.auth.trust_x_forwarded_for);
            let key = credential(&state, token.expose(), client).await?;
            req.extensions_mut().insert(match key.tenant_id {
                Some(t) => crate::http::Caller::Tenant(t.0),
                None => crate::http::Caller::Admin,
            });
            if key.kind == KeyKind::Live && key.tenant_suspended {
                return Err(AppError::forbidden(
                    "tenant_suspended",
                    "This tenant is suspended.",
                ));
            }
            rate_limit(&state, &req, &key).await?;
            Ok(Principal(key))
        })
    }
}
