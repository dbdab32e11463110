//! Creating, listing and revoking OAuth clients. The same permission model
//! as keys: a client never holds more than its creator, a tenant client only
//! tenant-key permissions. The secret is argon2-hashed and shown once.

use chrono::{DateTime, Utc};
use diesel::Connection;
use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{self, ClientRow, NewClient};
use super::{audit_hook, ClientKind};
use crate::auth::token::hash_secret;
use crate::auth::Principal;
use crate::db::pagination::{Page, PageRequest};
use crate::db::{self, PgPool};
use crate::domain::{Permission, Permissions, TenantId};
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::tenants::model::{self as tenants_db, TenantRef};

/// The most permission names a create request may list.
pub const MAX_PERMISSIONS: usize = 32;
const CLIENT_ID_PREFIX: &str = "plc_";
const CLIENT_ID_LEN: usize = 24;
const SECRET_LEN: usize = 48;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    pub name: String,
    /// `platform` on `/v1/oauth-clients`, `tenant` on the tenant route (optional).
    pub kind: Option<String>,
    /// Default: `*` for platform clients, `send` for tenant clients.
    pub permissions: Option<Vec<String>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientView {
    pub id: Uuid,
    pub client_id: String,
    pub kind: String,
    pub tenant_id: Option<Uuid>,
    pub name: String,
    pub permissions: Vec<String>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Present only in the response that created the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

/// The secret never prints.
impl std::fmt::Debug for ClientView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientView")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .field("kind", &self.kind)
            .field("tenant_id", &self.tenant_id)
            .field("permissions", &self.permissions)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .finish_non_exhaustive()
    }
}

impl From<ClientRow> for ClientView {
    fn from(r: ClientRow) -> Self {
        ClientView {
            id: r.id,
            client_id: r.client_id,
            kind: r.kind,
            tenant_id: r.tenant_id,
            name: r.name,
            permissions: r.permissions,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
            created_at: r.created_at,
            client_secret: None,
        }
    }
}

fn validate(
    input: &CreateClient,
    kind: ClientKind,
    who: &Principal,
) -> AppResult<(String, Permissions)> {
    let name = input.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "name",
            "must be 1-200 printable characters",
        ));
    }
    if input.kind.as_deref().is_some_and(|k| k != kind.as_str()) {
        return Err(AppError::invalid(
            "kind",
            format!("must be '{}' on this route", kind.as_str()),
        ));
    }
    let default = match kind {
        ClientKind::Platform => Permission::All,
        ClientKind::Tenant => Permission::Send,
    };
    let names = input
        .permissions
        .clone()
        .unwrap_or_else(|| vec![default.as_str().to_string()]);
    if names.is_empty() || names.len() > MAX_PERMISSIONS {
        return Err(AppError::invalid(
            "permissions",
            format!("must name 1-{MAX_PERMISSIONS} permissions"),
        ));
    }
    let permissions = Permissions::parse_list("permissions", &names)?;
    if kind == ClientKind::Tenant {
        if let Some((i, n)) = names
            .iter()
            .enumerate()
            .find(|(_, n)| Permission::parse(n).is_some_and(|p| !p.allowed_for_tenant_keys()))
        {
            return Err(AppError::invalid(
                format!("permissions[{i}]"),
                format!("'{n}' is not a tenant-key permission"),
            ));
        }
    }
    if !who.0.permissions.covers(&permissions) {
        return Err(AppError::forbidden(
            "insufficient_permission",
            "A client cannot be given permissions its creator does not hold.",
        ));
    }
    Ok((name, permissions))
}

fn generate() -> AppResult<(String, String, String)> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = OsRng;
    let id: String = (0..CLIENT_ID_LEN)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    let secret = Alphanumeric.sample_string(&mut rng, SECRET_LEN);
    let hash = hash_secret(&secret).map_err(|e| AppError::internal("client secret", e))?;
    Ok((format!("{CLIENT_ID_PREFIX}{id}"), secret, hash))
}

/// The owner addressed: a live tenant (`NotFound` otherwise), or the platform.
fn owner(
    conn: &mut diesel::PgConnection,
    tenant: Option<&TenantRef>,
) -> AppResult<Option<TenantId>> {
    match tenant {
        Some(r) => {
            let row = tenants_db::find(conn, r, false)?.ok_or(AppError::NotFound)?;
            Ok(Some(TenantId(row.id)))
        }
        None => Ok(None),
    }
}

/// Creates a platform client (`tenant` None) or a client of that tenant.
pub async fn create(
    state: &AppState,
    who: &Principal,
    tenant: Option<TenantRef>,
    input: CreateClient,
) -> AppResult<ClientView> {
    let kind = if tenant.is_some() {
        ClientKind::Tenant
    } else {
        ClientKind::Platform
    };
    let (name, permissions) = validate(&input, kind, who)?;
    let actor = crate::audit::Actor::key(who, None);
    // argon2 hashing is CPU work: off the async threads.
    let (client_id, secret, hash) = tokio::task::spawn_blocking(generate)
        .await
        .map_err(|e| AppError::internal("client generation", e))??;
    let row = db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let tenant_id = owner(conn, tenant.as_ref())?;
            let row = NewClient {
                id: Uuid::new_v4(),
                tenant_id: tenant_id.map(|t| t.0),
                kind: kind.as_str(),
                name: &name,
                client_id: &client_id,
                secret_hash: &hash,
                permissions: permissions.names(),
            }
            .insert(conn)?;
            audit_hook(conn, "oauth_client.created", &actor, tenant_id, row.id)?;
            Ok(row)
        })
    })
    .await?;
    tracing::info!(oauth_client = %row.id, kind = kind.as_str(), "oauth client created");
    let mut view = ClientView::from(row);
    view.client_secret = Some(secret);
    Ok(view)
}

pub async fn list(
    pool: &PgPool,
    tenant: Option<TenantRef>,
    page: PageRequest,
) -> AppResult<Page<ClientView>> {
    let rows = db::run(pool, move |conn| {
        let owner = owner(conn, tenant.as_ref())?;
        Ok(model::list(conn, owner, page)?)
    })
    .await?;
    Ok(Page::from_rows(
        rows,
        page,
        ClientRow::position,
        ClientView::from,
    ))
}

/// Revokes a client; its tokens stop on this node at once, on others within
/// `auth.cache_ttl_secs`.
pub async fn revoke(
    state: &AppState,
    who: &Principal,
    tenant: Option<TenantRef>,
    id: &str,
) -> AppResult<()> {
    let id = Uuid::parse_str(id).map_err(|_| AppError::NotFound)?;
    let actor = crate::audit::Actor::key(who, None);
    let client_id = db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let owner = owner(conn, tenant.as_ref())?;
            if !model::revoke(conn, owner, id)? {
                return Err(AppError::NotFound);
            }
            audit_hook(conn, "oauth_client.revoked", &actor, owner, id)?;
            Ok(model::find(conn, owner, id)?.map(|row| row.client_id))
        })
    })
    .await?;
    if let Some(client_id) = client_id {
        state.oauth.forget_client(id, &client_id).await;
    }
    tracing::info!(oauth_client = %id, "oauth client revoked");
    Ok(())
}
