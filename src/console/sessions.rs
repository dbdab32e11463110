//! Sessions (the cookie's token, stored as its SHA-256) and one-time
//! invitation links. Their tokens name the owner (`owner::new_token`), so
//! each is looked up on its owner's rows alone.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::model;
use super::owner::{self, Owner};
use super::session_model::{self as sessions_db, NewSession};
use super::users::{check_password, hash, ConsoleUser};
use crate::config::Secret;
use crate::db::{self, PgPool};
use crate::error::{AppError, AppResult};

/// A random 32-byte token, base64url, and its SHA-256 (what is stored).
pub fn new_token() -> (Secret, Vec<u8>) {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let text = URL_SAFE_NO_PAD.encode(raw);
    let hash = digest(&text);
    (Secret::new(text), hash)
}

pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Opens a session for `owner`'s `user`: the cookie's token (to send once).
pub async fn open_session(
    pool: &PgPool,
    owner: Owner,
    user: Uuid,
    ttl_secs: u64,
) -> AppResult<Secret> {
    let (token, hash) = owner::new_token(owner);
    let (csrf, _) = new_token();
    let expires_at = Utc::now() + Duration::seconds(i64::try_from(ttl_secs).unwrap_or(43_200));
    db::run(pool, move |conn| {
        sessions_db::insert_session(
            conn,
            owner,
            &NewSession {
                token_hash: &hash,
                user_id: user,
                csrf_token: csrf.expose(),
                expires_at,
            },
        )?;
        // Sign-ins sweep what has expired, a bounded batch each.
        sessions_db::purge_expired(conn, 100)?;
        Ok(())
    })
    .await?;
    Ok(token)
}

/// The user of a session token, if the session is live.
pub async fn session(pool: &PgPool, token: &str) -> AppResult<Option<ConsoleUser>> {
    let Some((scope, hash)) = owner::locate(token) else {
        return Ok(None);
    };
    let found = db::run(pool, {
        let hash = hash.clone();
        move |conn| Ok(sessions_db::session(conn, scope, &hash)?)
    })
    .await?;
    Ok(found.and_then(|(row, csrf, status)| {
        if status.as_deref() == Some("deleted") {
            return None;
        }
        ConsoleUser::from_row(row, csrf, hash, status.as_deref())
    }))
}

/// Ends this session, or with `everywhere` every session of the user.
pub async fn close(pool: &PgPool, user: &ConsoleUser, everywhere: bool) -> AppResult<()> {
    let (owner, id, hash) = (user.owner(), user.id, user.token_hash.clone());
    db::run(pool, move |conn| {
        if everywhere {
            sessions_db::delete_sessions_of(conn, owner, id)?;
        } else {
            sessions_db::delete_session(conn, owner, &hash)?;
        }
        Ok(())
    })
    .await
}

pub async fn invitation_open(pool: &PgPool, token: &str) -> AppResult<bool> {
    let Some((scope, hash)) = owner::locate(token) else {
        return Ok(false);
    };
    db::run(pool, move |conn| {
        Ok(sessions_db::invitation_open(conn, scope, &hash)?)
    })
    .await
}

/// Uses a one-time link: sets the password and returns the user's id;
/// `NotFound` for a used, expired or unknown link.
pub async fn accept_invitation(pool: &PgPool, token: &str, password: &str) -> AppResult<Uuid> {
    check_password(password)?;
    let (scope, hash_of_token) = owner::locate(token).ok_or(AppError::NotFound)?;
    let password_hash = hash(password).await?;
    db::run(pool, move |conn| {
        use diesel::Connection;
        conn.transaction(|conn| {
            let (owner, user) = sessions_db::take_invitation(conn, scope, &hash_of_token)?
                .ok_or(AppError::NotFound)?;
            model::set_password(conn, owner, user, &password_hash)?;
            // A new password ends every session opened with the old one.
            sessions_db::delete_sessions_of(conn, owner, user)?;
            Ok(user)
        })
    })
    .await
}
