//! Console users: roles onto the API's permissions, creation (the CLI and
//! invitations), sign-in with argon2 (sessions and links: `sessions`).

use std::sync::Arc;

use chrono::{Duration, Utc};
use uuid::Uuid;

use super::model::{self, NewUser, UserRow};
use super::owner::{self, Owner};
use crate::audit::{Actor, ActorKind};
use crate::auth::{token, Principal, VerifiedKey};
use crate::config::Secret;
use crate::db::{self, PgPool};
use crate::domain::{parse_email, KeyKind, Permission, Permissions, TenantId};
use crate::error::{AppError, AppResult};
use crate::tenants::model::{self as tenants_db, TenantRef};

/// What a console user may do; tenant roles map onto the API permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A platform admin: every admin route, every tenant.
    Admin,
    /// Everything a tenant key may do, plus the tenant's API keys.
    Owner,
    /// Everything a tenant key may do (send, templates, webhooks, domains,
    /// suppressions, usage, audit), but no API keys.
    Developer,
    /// Reads only.
    Viewer,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            "developer" => Some(Role::Developer),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Owner => "owner",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }

    pub fn permissions(self) -> Permissions {
        let tenant = Permission::ALL
            .into_iter()
            .filter(|p| p.allowed_for_tenant_keys());
        Permissions::new(match self {
            Role::Admin => vec![Permission::All],
            Role::Owner => tenant.chain([Permission::KeysWrite]).collect(),
            Role::Developer => tenant.collect(),
            Role::Viewer => tenant.filter(|p| p.as_str().ends_with(":read")).collect(),
        })
    }
}

/// A signed-in user as the services see it: a resolved [`Principal`] (an
/// admin key's powers, or a tenant key's of its own tenant) and the audit
/// actor that names the user.
#[derive(Clone, Debug)]
pub struct ConsoleUser {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    /// TOTP is on for this user.
    pub totp: bool,
    pub who: Principal,
    pub(super) csrf: String,
    pub(super) token_hash: Vec<u8>,
}

impl ConsoleUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn tenant(&self) -> Option<TenantId> {
        self.who.tenant()
    }

    /// Where the user's rows are (a tenant's, or the platform's).
    pub fn owner(&self) -> Owner {
        Owner::of(self.tenant().map(|t| t.0))
    }

    /// The audit actor: kind `user`, the user's id (as `Actor::key` gives
    /// for services that take only the principal).
    pub fn actor(&self, request_id: Option<String>) -> Actor {
        Actor {
            kind: ActorKind::User,
            id: Some(self.id),
            request_id,
        }
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    pub(super) fn from_row(
        row: UserRow,
        csrf: String,
        token_hash: Vec<u8>,
        tenant_status: Option<&str>,
    ) -> Option<ConsoleUser> {
        let role = Role::parse(&row.role)?;
        let key = VerifiedKey {
            api_key_id: row.id,
            kind: if role == Role::Admin {
                KeyKind::Admin
            } else {
                KeyKind::Live
            },
            tenant_id: row.tenant_id.map(TenantId),
            tenant_suspended: tenant_status == Some("suspended"),
            permissions: role.permissions(),
            expires_at: None,
            oauth_client: false,
            console_user: true,
        };
        Some(ConsoleUser {
            id: row.id,
            email: row.email,
            role,
            totp: row.totp_enabled,
            who: Principal(Arc::new(key)),
            csrf,
            token_hash,
        })
    }
}

/// Passwords: 12 to 256 characters (argon2 cost does not grow with it, but
/// memory for the form does: bounded).
pub(super) fn check_password(p: &str) -> AppResult<()> {
    let n = p.chars().count();
    if !(12..=256).contains(&n) {
        return Err(AppError::invalid(
            "password",
            "must be between 12 and 256 characters",
        ));
    }
    Ok(())
}

pub(super) async fn hash(password: &str) -> AppResult<String> {
    let p = Secret::new(password);
    tokio::task::spawn_blocking(move || token::hash_secret(p.expose()))
        .await
        .map_err(|e| AppError::internal("password hash", e))?
        .map_err(|e| AppError::internal("password hash", e))
}

/// The result of creating a user: with no password, the one-time link path.
pub struct Created {
    pub user: UserRow,
    pub invitation: Option<Secret>,
}

/// Creates a user (`postline user create`, the team form). `tenant` is
/// required for tenant roles and refused for admins.
pub async fn create(
    pool: &PgPool,
    actor: &Actor,
    email: &str,
    role: Role,
    tenant: Option<TenantRef>,
    password: Option<&str>,
    invitation_ttl_secs: u64,
) -> AppResult<Created> {
    let email = parse_email("email", email.trim())?.to_ascii_lowercase();
    if email.len() > 254 {
        return Err(AppError::invalid("email", "must be at most 254 characters"));
    }
    if (role == Role::Admin) != tenant.is_none() {
        return Err(AppError::invalid(
            "tenant",
            "an admin has no tenant; a tenant role needs one",
        ));
    }
    let password_hash = match password {
        Some(p) => {
            check_password(p)?;
            Some(hash(p).await?)
        }
        None => None,
    };
    let ttl = Duration::seconds(i64::try_from(invitation_ttl_secs).unwrap_or(86_400));
    let actor = actor.clone();
    let (user, link) = db::run(pool, move |conn| {
        use diesel::Connection;
        conn.transaction(|conn| {
            let tenant_id = match &tenant {
                Some(r) => Some(
                    tenants_db::find(conn, r, false)?
                        .ok_or(AppError::NotFound)?
                        .id,
                ),
                None => None,
            };
            let user = model::insert_user(
                conn,
                &NewUser {
                    id: Uuid::new_v4(),
                    tenant_id,
                    email: &email,
                    role: role.as_str(),
                    password_hash: password_hash.as_deref(),
                },
            )?;
            // The link's token names the owner (`owner::new_token`).
            let invitation = password_hash
                .is_none()
                .then(|| owner::new_token(user.owner()));
            if let Some((_, hash)) = &invitation {
                super::session_model::insert_invitation(
                    conn,
                    user.owner(),
                    hash,
                    user.id,
                    Utc::now() + ttl,
                )?;
            }
            let changes = serde_json::json!({"email": user.email, "role": user.role});
            crate::audit::record(
                conn,
                &actor,
                "console_user.created",
                user.tenant_id,
                user.id,
                changes,
            )?;
            Ok::<_, AppError>((user, invitation.map(|(token, _)| token)))
        })
    })
    .await?;
    Ok(Created {
        user,
        invitation: link,
    })
}

/// Checks an e-mail and password: the user, or `None` for any mismatch
/// (unknown address, no password yet, wrong password, deleted tenant). An
/// unknown address costs one argon2 run too, so timing tells nothing.
pub async fn check_login(pool: &PgPool, email: &str, password: &str) -> AppResult<Option<UserRow>> {
    let email = email.trim().to_ascii_lowercase();
    if email.is_empty() || email.len() > 254 || password.len() > 1024 {
        return Ok(None);
    }
    let found = db::run(pool, move |conn| Ok(model::user_by_email(conn, &email)?)).await?;
    let usable = found.filter(|(_, status)| status.as_deref() != Some("deleted"));
    let stored = usable
        .as_ref()
        .and_then(|(u, _)| u.password_hash.clone())
        .unwrap_or_else(|| DUMMY_HASH.to_string());
    let p = Secret::new(password);
    crate::metrics::argon2_verification();
    let ok = tokio::task::spawn_blocking(move || token::verify_secret(p.expose(), &stored))
        .await
        .unwrap_or(false);
    Ok(match usable {
        Some((u, _)) if ok && u.password_hash.is_some() => Some(u),
        _ => None,
    })
}

/// An argon2id hash of a random string nobody knows: verified against when
/// the address is unknown, so that path costs the same.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$k1Wm0v4VhSHkHZ0tQxUe2xZ7mPwJk2Y0oH6aWq3lB2c";

/// The one-time link of an invitation token.
pub fn invitation_link(s: &crate::config::ConsoleSettings, token: &str) -> String {
    format!(
        "{}/console/invite/{token}",
        s.public_url.trim_end_matches('/')
    )
}
