//! Issuing, listing and revoking keys. A key can never grant more than the
//! key that creates it holds.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{self, ApiKeyRow, NewApiKey};
use diesel::Connection;

use crate::audit::{self, Actor};
use crate::auth::token;
use crate::auth::Principal;
use crate::config::Secret;
use crate::db::pagination::{Page, PageRequest};
use crate::db::{self, PgPool};
use crate::domain::{ApiKeyId, KeyKind, Permission, Permissions, TenantId};
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::tenants::model::{self as tenants_db, TenantRef};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    pub permissions: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub permissions: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The whole key: present only in the response that created it.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "Secret::serialize_exposed_opt"
    )]
    #[schema(value_type = Option<String>)]
    pub key: Option<Secret>,
}

impl From<ApiKeyRow> for KeyView {
    fn from(r: ApiKeyRow) -> Self {
        let kind = KeyKind::parse(&r.kind).unwrap_or(KeyKind::Live);
        KeyView {
            id: r.id,
            prefix: token::prefix(kind, &r.key_id),
            name: r.name,
            permissions: r.permissions,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
            created_at: r.created_at,
            key: None,
        }
    }
}

/// Validated input for a new key.
struct KeySpec {
    name: String,
    permissions: Permissions,
    expires_at: Option<DateTime<Utc>>,
}

fn validate(input: CreateKey, kind: KeyKind, granter: Option<&Principal>) -> AppResult<KeySpec> {
    let name = input.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "name",
            "must be 1-200 printable characters",
        ));
    }
    let default = match kind {
        KeyKind::Live => vec![Permission::Send.as_str().to_string()],
        KeyKind::Admin => vec![Permission::All.as_str().to_string()],
    };
    let names = input.permissions.unwrap_or(default);
    if names.is_empty() {
        return Err(AppError::invalid(
            "permissions",
            "must name at least one permission",
        ));
    }
    let permissions = Permissions::parse_list("permissions", &names)?;
    if kind == KeyKind::Live {
        if let Some((i, p)) = names
            .iter()
            .enumerate()
            .find(|(_, n)| Permission::parse(n).is_some_and(|p| !p.allowed_for_tenant_keys()))
        {
            return Err(AppError::invalid(
                format!("permissions[{i}]"),
                format!("'{p}' is not a tenant-key permission"),
            ));
        }
    }
    if let Some(granter) = granter {
        if !granter.0.permissions.covers(&permissions) {
            return Err(AppError::forbidden(
                "insufficient_permission",
                "A key cannot grant permissions it does not hold.",
            ));
        }
    }
    if input.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(AppError::invalid("expires_at", "must be in the future"));
    }
    Ok(KeySpec {
        name,
        permissions,
        expires_at: input.expires_at,
    })
}

async fn issue(
    pool: &PgPool,
    actor: &Actor,
    kind: KeyKind,
    tenant: Option<TenantRef>,
    spec: KeySpec,
) -> AppResult<KeyView> {
    // argon2 hashing is CPU work: off the async threads.
    let new = tokio::task::spawn_blocking(move || token::generate(kind))
        .await
        .map_err(|e| AppError::internal("key generation", e))??;
    let token_text = new.token.clone();
    let actor = actor.clone();
    let row = db::run(pool, move |conn| {
        conn.transaction(|conn| {
            let tenant_id = match tenant {
                Some(r) => Some(
                    tenants_db::find(conn, &r, false)?
                        .ok_or(AppError::NotFound)?
                        .id,
                ),
                None => None,
            };
            let row = NewApiKey {
                id: Uuid::new_v4(),
                tenant_id,
                kind: kind.as_str(),
                name: &spec.name,
                key_id: &new.key_id,
                secret_hash: &new.secret_hash,
                permissions: spec.permissions.names(),
                expires_at: spec.expires_at,
            }
            .insert(conn)?;
            let changes = serde_json::json!({
                "kind": kind.as_str(), "name": row.name, "prefix": token::prefix(kind, &row.key_id),
                "permissions": row.permissions, "expires_at": row.expires_at,
            });
            audit::record(conn, &actor, "key.created", row.tenant_id, row.id, changes)?;
            Ok::<_, AppError>(row)
        })
    })
    .await?;
    tracing::info!(api_key_id = %row.id, kind = kind.as_str(), "api key created");
    let mut view = KeyView::from(row);
    view.key = Some(token_text);
    Ok(view)
}

pub async fn create_tenant_key(
    state: &AppState,
    who: &Principal,
    actor: &Actor,
    tenant: TenantRef,
    input: CreateKey,
) -> AppResult<KeyView> {
    let spec = validate(input, KeyKind::Live, Some(who))?;
    issue(&state.pool, actor, KeyKind::Live, Some(tenant), spec).await
}

pub async fn create_admin_key(
    state: &AppState,
    who: &Principal,
    actor: &Actor,
    input: CreateKey,
) -> AppResult<KeyView> {
    let spec = validate(input, KeyKind::Admin, Some(who))?;
    issue(&state.pool, actor, KeyKind::Admin, None, spec).await
}

/// The CLI bootstrap: no granting key, so any permission may be given.
pub async fn bootstrap_admin_key(
    pool: &PgPool,
    name: String,
    permissions: Vec<String>,
) -> AppResult<KeyView> {
    let input = CreateKey {
        name,
        permissions: (!permissions.is_empty()).then_some(permissions),
        expires_at: None,
    };
    let spec = validate(input, KeyKind::Admin, None)?;
    issue(pool, &Actor::cli(), KeyKind::Admin, None, spec).await
}

/// The owner of the keys addressed: a live tenant (`NotFound` otherwise), or
/// `None` for the admin keys.
fn owner(
    conn: &mut diesel::PgConnection,
    tenant: Option<TenantRef>,
) -> AppResult<Option<TenantId>> {
    match tenant {
        Some(r) => {
            let row = tenants_db::find(conn, &r, false)?.ok_or(AppError::NotFound)?;
            Ok(Some(TenantId(row.id)))
        }
        None => Ok(None),
    }
}

pub async fn list(
    state: &AppState,
    tenant: Option<TenantRef>,
    page: PageRequest,
) -> AppResult<Page<KeyView>> {
    let rows = db::run(&state.pool, move |conn| {
        let owner = owner(conn, tenant)?;
        Ok(model::list(conn, owner, page)?)
    })
    .await?;
    Ok(Page::from_rows(
        rows,
        page,
        ApiKeyRow::position,
        KeyView::from,
    ))
}

pub async fn revoke(
    state: &AppState,
    actor: &Actor,
    tenant: Option<TenantRef>,
    key: &str,
) -> AppResult<()> {
    let id = Uuid::parse_str(key).map_err(|_| AppError::NotFound)?;
    let actor = actor.clone();
    db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let owner = owner(conn, tenant)?;
            if !model::revoke(conn, owner, ApiKeyId(id))? {
                return Err(AppError::NotFound);
            }
            audit::record(
                conn,
                &actor,
                "key.revoked",
                owner.map(|t| t.0),
                id,
                serde_json::json!({}),
            )?;
            Ok(())
        })
    })
    .await?;
    state.auth.invalidate_key(id);
    tracing::info!(api_key_id = %id, "api key revoked");
    Ok(())
}
