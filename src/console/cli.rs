//! `postline user create`: the first admin, or a tenant user. Without
//! `--password` it prints a one-time link to set one. `postline user
//! remove`: a user and their sessions. `postline user totp-reset`: TOTP
//! off for a locked-out user.

use crate::audit::Actor;
use crate::config::Settings;
use crate::console::users::{self, Role};
use crate::tenants::model::TenantRef;

pub struct CreateArgs {
    pub admin: bool,
    pub tenant: Option<String>,
    pub role: Option<String>,
    pub email: String,
    pub password: Option<String>,
}

/// Checks the flags, creates the user, prints what to do next. The link is
/// printed on the last line of stdout alone (like `admin-key create`).
pub async fn create(
    settings: &Settings,
    pool: &crate::db::PgPool,
    a: CreateArgs,
) -> anyhow::Result<()> {
    let (role, tenant) = match (a.admin, a.tenant, a.role.as_deref()) {
        (true, None, None | Some("admin")) => (Role::Admin, None),
        (false, Some(t), Some(r)) => match Role::parse(r).filter(|r| *r != Role::Admin) {
            Some(role) => (role, Some(TenantRef::parse(&t))),
            None => anyhow::bail!("--role must be owner, developer or viewer"),
        },
        (true, Some(_), _) => anyhow::bail!("--admin takes no --tenant"),
        (false, Some(_), None) => anyhow::bail!("--tenant needs --role owner|developer|viewer"),
        _ => anyhow::bail!("give --admin, or --tenant ID --role owner|developer|viewer"),
    };
    let created = users::create(
        pool,
        &Actor::cli(),
        &a.email,
        role,
        tenant,
        a.password.as_deref(),
        settings.console.invitation_ttl_secs,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "created console user {} ({}{})",
        created.user.email,
        role.as_str(),
        created
            .user
            .tenant_id
            .map(|t| format!(" of tenant {t}"))
            .unwrap_or_default()
    );
    match created.invitation {
        Some(token) => {
            println!(
                "one-time link to set the password (valid {} s):",
                settings.console.invitation_ttl_secs
            );
            println!(
                "{}",
                users::invitation_link(&settings.console, token.expose())
            );
        }
        None => println!("sign in at /console/login"),
    }
    Ok(())
}

/// Removes a user by e-mail; their sessions end with it.
pub async fn remove(pool: &crate::db::PgPool, email: &str) -> anyhow::Result<()> {
    let removed = crate::console::team::remove_by_email(pool, &Actor::cli(), email)
        .await
        .map_err(|e| match e {
            crate::error::AppError::NotFound => anyhow::anyhow!("no console user {email}"),
            e => anyhow::anyhow!("{e}"),
        })?;
    println!(
        "removed console user {} ({}); their sessions have ended",
        removed.email, removed.role
    );
    Ok(())
}

/// Turns TOTP off for a user (audited as the CLI).
pub async fn totp_reset(pool: &crate::db::PgPool, email: &str) -> anyhow::Result<()> {
    let was_on = crate::console::second_factor::reset(pool, &Actor::cli(), email)
        .await
        .map_err(|e| match e {
            crate::error::AppError::NotFound => anyhow::anyhow!("no console user {email}"),
            e => anyhow::anyhow!("{e}"),
        })?;
    if was_on {
        println!("TOTP turned off for {email}; they sign in with their password alone");
    } else {
        println!("TOTP was not on for {email}; nothing to turn off");
    }
    Ok(())
}
