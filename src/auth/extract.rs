//! The `Principal` extractor: who is calling, checked once per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};

use super::{AuthService, VerifiedKey};
use crate::domain::{KeyKind, Permission, TenantId};
use crate::error::{AppError, AppResult};

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

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

impl FromRequest for Principal {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let auth = req.app_data::<web::Data<AuthService>>().cloned();
        let token = bearer(req);
        Box::pin(async move {
            let auth =
                auth.ok_or_else(|| AppError::internal("auth", "AuthService not registered"))?;
            let token = token.ok_or(AppError::Unauthorized)?;
            let key = auth.authenticate(&token).await?;
            if key.kind == KeyKind::Live && key.tenant_suspended {
                return Err(AppError::forbidden(
                    "tenant_suspended",
                    "This tenant is suspended.",
                ));
            }
            Ok(Principal(key))
        })
    }
}
