//! TOTP as a second factor of console users: enrolment (a sealed secret,
//! in force only once a current code confirmed it), turning it off (a code
//! again, or `postline user totp-reset`), and the sign-in's second step (a
//! short-lived random challenge token whose SHA-256 is in Postgres, then a
//! code of a step not used before).

use chrono::{Duration, Utc};
use diesel::Connection;
use uuid::Uuid;

use super::owner::{self, Owner};
use super::totp;
use super::totp_model::{self as model, TotpRow};
use super::users::ConsoleUser;
use crate::audit::Actor;
use crate::config::Secret;
use crate::crypto::Vault;
use crate::db::{self, PgPool};
use crate::error::{AppError, AppResult};

/// How long the code form of a sign-in stays usable.
pub const CHALLENGE_TTL_SECS: i64 = 300;
/// Wrong codes one pending sign-in takes before the password is due again
/// (a bound on guessing even with `console.login_failures_per_minute = 0`).
pub const MAX_CODE_FAILURES: i32 = 5;

/// The AEAD context of a user's sealed TOTP secret.
pub fn secret_context(user: Uuid) -> String {
    format!("console_user:{user}:totp_secret")
}

/// What the account page shows.
#[derive(serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    Off,
    /// Set up, not yet confirmed: the secret for the user's authenticator.
    Pending {
        secret: String,
        uri: String,
    },
    On,
}

/// The outcome of a code at the sign-in's second step.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The code is right and fresh: open a session for this user.
    Accepted(Owner, Uuid),
    /// Wrong, or a step already used (counts as a failed sign-in). With
    /// `retry` false that was the challenge's last try.
    Refused { retry: bool },
    /// No such live challenge (expired, used, or TOTP was reset).
    Expired,
}

fn now_step() -> i64 {
    totp::step_at(Utc::now().timestamp())
}

fn open_secret(vault: &Vault, row: &TotpRow) -> AppResult<zeroize::Zeroizing<Vec<u8>>> {
    let sealed = row
        .totp_secret_enc
        .as_deref()
        .ok_or_else(|| AppError::internal("totp", "no secret"))?;
    vault
        .open(sealed, &secret_context(row.id))
        .map_err(|e| AppError::internal("totp secret", e))
}

fn row(conn: &mut diesel::PgConnection, owner: Owner, user: Uuid) -> AppResult<TotpRow> {
    model::totp_for_update(conn, owner, user)?.ok_or(AppError::NotFound)
}

pub async fn status(pool: &PgPool, vault: &Vault, user: &ConsoleUser) -> AppResult<Status> {
    let (owner, id) = (user.owner(), user.id);
    let row = db::run(pool, move |conn| Ok(model::totp_of(conn, owner, id)?))
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(match (row.totp_enabled, row.totp_secret_enc.is_some()) {
        (true, _) => Status::On,
        (false, false) => Status::Off,
        (false, true) => {
            let secret = open_secret(vault, &row)?;
            Status::Pending {
                secret: totp::base32(&secret),
                uri: totp::uri(&secret, &row.email),
            }
        }
    })
}

/// Makes a new secret (replacing an unconfirmed one). TOTP that is on
/// must be turned off first (409).
pub async fn start(pool: &PgPool, vault: &Vault, user: &ConsoleUser) -> AppResult<()> {
    let (owner, id) = (user.owner(), user.id);
    let sealed = vault.seal(&totp::new_secret(), &secret_context(id));
    db::run(pool, move |conn| {
        if model::set_pending(conn, owner, id, &sealed)? == 0 {
            return Err(AppError::conflict(
                "TOTP is already on; turn it off first to set up a new authenticator.",
            ));
        }
        Ok(())
    })
    .await
}

/// Turns TOTP on with a current code of the pending secret, and ends the
/// user's other sessions (opened with the password alone). `Ok(false)`:
/// the code is wrong (nothing changed).
pub async fn enable(
    pool: &PgPool,
    vault: &Vault,
    user: &ConsoleUser,
    actor: Actor,
    code: &str,
) -> AppResult<bool> {
    let (owner, id, code, vault) = (user.owner(), user.id, code.to_string(), vault.clone());
    let this_session = user.token_hash.clone();
    db::run(pool, move |conn| {
        conn.transaction(|conn| {
            let row = row(conn, owner, id)?;
            if row.totp_enabled {
                return Err(AppError::conflict("TOTP is already on."));
            }
            let Some(sealed) = row.totp_secret_enc.clone() else {
                return Err(AppError::conflict("Set up TOTP first."));
            };
            let Some(step) = totp::matching_step(&open_secret(&vault, &row)?, &code, now_step())
            else {
                return Ok(false);
            };
            if !model::enable(conn, owner, id, &sealed, step)? {
                return Err(AppError::conflict("The setup changed; reload the page."));
            }
            super::session_model::delete_other_sessions(conn, owner, id, &this_session)?;
            let changes = serde_json::json!({"totp": "enabled"});
            crate::audit::record(
                conn,
                &actor,
                "console_user.totp_enabled",
                row.tenant_id,
                id,
                changes,
            )?;
            Ok(true)
        })
    })
    .await
}

/// Turns TOTP off with a current, unused code. `Ok(false)`: wrong or reused.
pub async fn disable(
    pool: &PgPool,
    vault: &Vault,
    user: &ConsoleUser,
    actor: Actor,
    code: &str,
) -> AppResult<bool> {
    let (owner, id, code, vault) = (user.owner(), user.id, code.to_string(), vault.clone());
    db::run(pool, move |conn| {
        conn.transaction(|conn| {
            let row = row(conn, owner, id)?;
            if !row.totp_enabled {
                return Err(AppError::conflict("TOTP is off."));
            }
            let step = totp::matching_step(&open_secret(&vault, &row)?, &code, now_step());
            match step {
                Some(s) if row.totp_last_step.is_none_or(|last| last < s) => {}
                _ => return Ok(false),
            }
            model::clear(conn, owner, id)?;
            model::delete_challenges_of(conn, owner, id)?;
            let changes = serde_json::json!({"totp": "disabled"});
            crate::audit::record(
                conn,
                &actor,
                "console_user.totp_disabled",
                row.tenant_id,
                id,
                changes,
            )?;
            Ok(true)
        })
    })
    .await
}

/// Whether a sign-in of `owner`'s `user` needs a code.
pub async fn required(pool: &PgPool, owner: Owner, user: Uuid) -> AppResult<bool> {
    let row = db::run(pool, move |conn| Ok(model::totp_of(conn, owner, user)?)).await?;
    Ok(row.is_some_and(|r| r.totp_enabled))
}

/// Opens the second step of a sign-in whose password was right: the token
/// for the browser's cookie (only its hash is stored).
pub async fn open_challenge(pool: &PgPool, owner: Owner, user: Uuid) -> AppResult<Secret> {
    let (token, hash) = owner::new_token(owner);
    let expires_at = Utc::now() + Duration::seconds(CHALLENGE_TTL_SECS);
    db::run(pool, move |conn| {
        model::insert_challenge(conn, owner, &hash, user, expires_at)?;
        model::purge_expired(conn, 100)?;
        Ok(())
    })
    .await?;
    Ok(token)
}

/// The e-mail of a live challenge's user (the throttle's key), if any.
pub async fn challenge_email(pool: &PgPool, token: &str) -> AppResult<Option<String>> {
    let Some((scope, hash)) = owner::locate(token) else {
        return Ok(None);
    };
    db::run(pool, move |conn| {
        let Some((owner, user)) = model::challenge_user(conn, scope, &hash)? else {
            return Ok(None);
        };
        Ok(model::totp_of(conn, owner, user)?.map(|r| r.email))
    })
    .await
}

/// Checks the code of a sign-in's second step. On acceptance the step is
/// recorded as used and the challenge is gone.
pub async fn complete(pool: &PgPool, vault: &Vault, token: &str, code: &str) -> AppResult<Verdict> {
    let Some((scope, hash)) = owner::locate(token) else {
        return Ok(Verdict::Expired);
    };
    let (code, vault) = (code.to_string(), vault.clone());
    db::run(pool, move |conn| {
        conn.transaction(|conn| {
            let Some((owner, user)) = model::challenge_user(conn, scope, &hash)? else {
                return Ok(Verdict::Expired);
            };
            let row = row(conn, owner, user)?;
            if !row.totp_enabled {
                return Ok(Verdict::Expired);
            }
            let step = totp::matching_step(&open_secret(&vault, &row)?, &code, now_step());
            let Some(step) = step.filter(|s| row.totp_last_step.is_none_or(|last| last < *s))
            else {
                let retry = model::fail_challenge(conn, owner, &hash, MAX_CODE_FAILURES)?;
                return Ok(Verdict::Refused { retry });
            };
            if !model::take_challenge(conn, owner, &hash, user)? {
                return Ok(Verdict::Expired);
            }
            // The row is locked: nobody used a later step meanwhile.
            if !model::use_step(conn, owner, user, step)? {
                return Ok(Verdict::Refused { retry: false });
            }
            Ok(Verdict::Accepted(owner, user))
        })
    })
    .await
}

/// `postline user totp-reset`: TOTP off for a locked-out user, their pending
/// sign-ins dropped. Returns whether it was on. `NotFound`: no such user.
pub async fn reset(pool: &PgPool, actor: &Actor, email: &str) -> AppResult<bool> {
    let (email, actor) = (email.trim().to_ascii_lowercase(), actor.clone());
    db::run(pool, move |conn| {
        conn.transaction(|conn| {
            let row = model::totp_by_email_for_update(conn, &email)?.ok_or(AppError::NotFound)?;
            model::clear(conn, row.owner(), row.id)?;
            model::delete_challenges_of(conn, row.owner(), row.id)?;
            let changes = serde_json::json!({"totp": "reset", "was_enabled": row.totp_enabled});
            crate::audit::record(
                conn,
                &actor,
                "console_user.totp_reset",
                row.tenant_id,
                row.id,
                changes,
            )?;
            Ok(row.totp_enabled)
        })
    })
    .await
}
