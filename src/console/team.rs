//! A tenant's team: its users for the tenant page, and the changes an admin
//! or one of the tenant's owners makes to them (role, removal). A tenant
//! keeps at least one owner. A removed user's sessions and invitation end
//! with the row; a new role takes effect at the user's next request (the
//! session is read with the user's row each time).

use uuid::Uuid;

use super::model::{self, UserRow};
use super::owner::Owner;
use super::users::{ConsoleUser, Role};
use crate::audit::Actor;
use crate::db::{self, PgPool};
use crate::domain::TenantId;
use crate::error::{AppError, AppResult};

/// One user on the tenant page (never a password hash).
#[derive(Debug, serde::Serialize)]
pub struct TeamMember {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub active: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

pub async fn team(pool: &PgPool, tenant: TenantId) -> AppResult<Vec<TeamMember>> {
    let rows = db::run(pool, move |conn| {
        Ok(model::users_of_tenant(conn, tenant.0)?)
    })
    .await?;
    Ok(rows
        .into_iter()
        .map(|u| TeamMember {
            id: u.id,
            email: u.email,
            role: u.role,
            active: u.password_hash.is_some(),
            created_at: u.created_at,
        })
        .collect())
}

/// Whether `user` may change the team of a tenant the caller has already
/// resolved for them (`tenant_for`): an admin, or an owner.
pub fn can_manage(user: &ConsoleUser) -> bool {
    user.is_admin() || user.role == Role::Owner
}

/// `postline user remove`: any user by e-mail, admins included (the CLI can
/// always create another). The last owner of a tenant stays.
pub async fn remove_by_email(pool: &PgPool, actor: &Actor, email: &str) -> AppResult<UserRow> {
    let email = email.trim().to_ascii_lowercase();
    let actor = actor.clone();
    db::run(pool, move |conn| {
        use diesel::Connection;
        conn.transaction(|conn| {
            let found = model::user_by_email_for_update(conn, &email)?.ok_or(AppError::NotFound)?;
            if let Some(tenant) = found.tenant_id {
                let owners = model::owners_for_update(conn, tenant)?;
                if found.role == Role::Owner.as_str() && owners.len() <= 1 {
                    return Err(last_owner());
                }
            }
            model::delete_user(conn, found.owner(), found.id)?;
            let changes = serde_json::json!({"email": found.email, "role": found.role});
            crate::audit::record(
                conn,
                &actor,
                "console_user.removed",
                found.tenant_id,
                found.id,
                changes,
            )?;
            Ok(found)
        })
    })
    .await
}

fn last_owner() -> AppError {
    AppError::conflict("A tenant keeps at least one owner: make another user owner first.")
}

pub enum Change {
    Role(Role),
    Remove,
}

/// Changes one user of `tenant`. A user of another tenant (or none) is
/// `NotFound`; leaving the tenant without an owner is a conflict.
pub async fn change(
    pool: &PgPool,
    actor: &Actor,
    by: &ConsoleUser,
    tenant: TenantId,
    user: Uuid,
    change: Change,
) -> AppResult<()> {
    if !can_manage(by) {
        return Err(AppError::forbidden(
            "owner_only",
            "Only an owner changes the team.",
        ));
    }
    if let Change::Role(Role::Admin) = change {
        return Err(AppError::invalid(
            "role",
            "must be owner, developer or viewer",
        ));
    }
    let actor = actor.clone();
    db::run(pool, move |conn| {
        use diesel::Connection;
        conn.transaction(|conn| {
            // The owners first, locked: of two owners removing each other
            // at once, the second sees the first gone.
            let owners = model::owners_for_update(conn, tenant.0)?;
            let row =
                model::tenant_user_for_update(conn, tenant.0, user)?.ok_or(AppError::NotFound)?;
            let stays_owner = matches!(change, Change::Role(Role::Owner));
            if row.role == Role::Owner.as_str() && !stays_owner && owners.len() <= 1 {
                return Err(last_owner());
            }
            let (action, changes) = match change {
                Change::Role(role) => {
                    model::set_role(conn, tenant.0, user, role.as_str())?;
                    let changes = serde_json::json!({
                        "email": row.email,
                        "role": {"from": row.role, "to": role.as_str()},
                    });
                    ("console_user.role_changed", changes)
                }
                Change::Remove => {
                    model::delete_user(conn, Owner::Tenant(tenant.0), user)?;
                    let changes = serde_json::json!({"email": row.email, "role": row.role});
                    ("console_user.removed", changes)
                }
            };
            crate::audit::record(conn, &actor, action, Some(tenant.0), user, changes)?;
            Ok(())
        })
    })
    .await
}
