//! Which tenant a call on a tenant-owned capability (templates, webhooks)
//! acts for: a tenant key's own (`/v1/templates`), or, for an admin key, the
//! tenant named in the path (`/v1/tenants/{id}/templates`).

use serde::Deserialize;

use super::model::TenantRef;
use crate::auth::Principal;
use crate::domain::{Permission, TenantId};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Path parameters of tenant-owned routes: `{tenant}` only on the admin form.
#[derive(Debug, Deserialize)]
pub struct ScopedPath {
    pub tenant: Option<String>,
    pub id: Option<String>,
}

impl ScopedPath {
    /// The resource id segment (routes without one never call this).
    pub fn id(&self) -> AppResult<&str> {
        self.id.as_deref().ok_or(AppError::NotFound)
    }
}

/// Checks `permission` (and, on the admin form, that the key is an admin
/// key) before anything is looked up, then resolves the tenant. A deleted or
/// unknown tenant is a 404.
pub async fn resolve(
    state: &AppState,
    who: &Principal,
    path: &ScopedPath,
    permission: Permission,
    capability: &str,
) -> AppResult<TenantId> {
    match (&path.tenant, who.tenant()) {
        (Some(t), _) => {
            who.require_admin(permission)?;
            let row = state.tenants.get(&TenantRef::parse(t)).await?;
            Ok(TenantId(row.id))
        }
        (None, Some(own)) => {
            who.require(permission)?;
            Ok(own)
        }
        (None, None) => Err(AppError::forbidden(
            "tenant_key_required",
            format!("This route acts for one tenant: with an admin key use /v1/tenants/{{id}}/{capability}."),
        )),
    }
}

/// A tenant resource's read and write permissions, and its name in messages.
pub struct Capability {
    pub name: &'static str,
    pub read: Permission,
    pub write: Permission,
}

/// [`resolve`] with the capability's read or write permission.
pub async fn resolve_for(
    state: &AppState,
    who: &Principal,
    path: &ScopedPath,
    cap: &Capability,
    write: bool,
) -> AppResult<TenantId> {
    let permission = if write { cap.write } else { cap.read };
    resolve(state, who, path, permission, cap.name).await
}
