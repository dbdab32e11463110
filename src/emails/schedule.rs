//! Scheduled send, reschedule and cancel (API.md "Message lifecycle
//! additions"). A scheduled message is queued like any other, with its queue
//! row's `next_attempt_at` at `scheduled_at`; these calls change that row and
//! the message together ([`super::lifecycle`]).

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::lifecycle::{self, Refused};
use super::service::{detail, target};
use super::view::EmailDetail;
use crate::auth::Principal;
use crate::db;
use crate::domain::{Permission, TenantId};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// How far ahead a message may be scheduled.
pub const MAX_AHEAD_DAYS: i64 = 30;

/// `scheduled_at`: RFC 3339, in the future, at most [`MAX_AHEAD_DAYS`] days
/// from `now`. The message says which rule it broke.
pub fn parse_scheduled_at(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let at = DateTime::parse_from_rfc3339(raw)
        .map_err(|_| "must be an RFC 3339 date-time such as 2027-01-31T09:00:00Z".to_string())?
        .with_timezone(&Utc);
    if at <= now {
        return Err("must be in the future".into());
    }
    if at > now + ChronoDuration::days(MAX_AHEAD_DAYS) {
        return Err(format!("must be at most {MAX_AHEAD_DAYS} days ahead"));
    }
    Ok(at)
}

/// `PATCH /v1/emails/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reschedule {
    /// The new time (RFC 3339, in the future, at most 30 days ahead).
    #[schema(format = DateTime)]
    pub scheduled_at: String,
}

/// The tenant a change acts for: a tenant key's own; for an admin key the
/// path's (`/v1/tenants/{id}/emails/{email}`) or `?tenant_id=`.
async fn acting_tenant(
    state: &AppState,
    who: &Principal,
    path: Option<&str>,
    query: Option<&str>,
) -> AppResult<TenantId> {
    who.require(Permission::Send)?;
    if let Some(own) = who.tenant() {
        // `?tenant_id=` from a tenant key is refused as on reads.
        target(who, path, query, "tenant_id")?;
        return Ok(own);
    }
    let r = target(who, path, query, "tenant_id")?;
    Ok(TenantId(state.tenants.get(&r).await?.id))
}

fn refused(r: Refused, code: &'static str, detail: &str) -> AppError {
    match r {
        Refused::Missing => AppError::NotFound,
        Refused::State => AppError::Conflict {
            code,
            detail: detail.into(),
        },
    }
}

/// Cancels a `scheduled`, `queued`, `deferred` or `held` message that no
/// worker is sending right now; else 409 `email_not_cancelable`.
pub async fn cancel(
    state: &AppState,
    who: &Principal,
    path: Option<&str>,
    query: Option<&str>,
    id: &str,
) -> AppResult<EmailDetail> {
    let tenant = acting_tenant(state, who, path, query).await?;
    let id = Uuid::parse_str(id).map_err(|_| AppError::NotFound)?;
    db::run(&state.pool, move |conn| {
        use diesel::Connection;
        conn.transaction(|conn| {
            lifecycle::cancel(conn, tenant, id)?.map_err(|r| {
                refused(
                    r,
                    "email_not_cancelable",
                    "Only a scheduled, queued, deferred or held message that is not being \
                     sent right now can be canceled.",
                )
            })?;
            detail(conn, tenant, id)
        })
    })
    .await
}

/// Moves a `scheduled` message (its time not yet come, not being sent) to a
/// new time; else 409 `email_not_reschedulable`.
pub async fn reschedule(
    state: &AppState,
    who: &Principal,
    path: Option<&str>,
    query: Option<&str>,
    id: &str,
    body: Reschedule,
) -> AppResult<EmailDetail> {
    let tenant = acting_tenant(state, who, path, query).await?;
    let id = Uuid::parse_str(id).map_err(|_| AppError::NotFound)?;
    let at = parse_scheduled_at(&body.scheduled_at, Utc::now())
        .map_err(|m| AppError::invalid("scheduled_at", m))?;
    let lifetime = ChronoDuration::seconds(
        i64::try_from(state.settings.delivery.max_lifetime_secs).unwrap_or(i64::MAX / 2),
    );
    db::run(&state.pool, move |conn| {
        use diesel::Connection;
        conn.transaction(|conn| {
            lifecycle::reschedule(conn, tenant, id, at, at + lifetime)?.map_err(|r| {
                refused(
                    r,
                    "email_not_reschedulable",
                    "Only a scheduled message whose time has not come yet can be rescheduled.",
                )
            })?;
            detail(conn, tenant, id)
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_at_bounds() {
        let now = Utc::now();
        let at = |d: ChronoDuration| (now + d).to_rfc3339();
        assert!(parse_scheduled_at(&at(ChronoDuration::minutes(1)), now).is_ok());
        assert!(parse_scheduled_at(&at(ChronoDuration::days(30)), now).is_ok());
        let over = parse_scheduled_at(
            &at(ChronoDuration::days(30) + ChronoDuration::seconds(1)),
            now,
        );
        assert_eq!(over.unwrap_err(), "must be at most 30 days ahead");
        assert_eq!(
            parse_scheduled_at(&at(-ChronoDuration::seconds(1)), now).unwrap_err(),
            "must be in the future"
        );
        assert!(parse_scheduled_at("tomorrow", now).is_err());
    }
}
