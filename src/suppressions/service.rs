//! Suppression list operations for a resolved tenant and actor: domain
//! results, no HTTP types. Addresses are compared lower-cased. Changes by
//! hand are audited (`suppression.added`, `suppression.removed`) in their
//! transaction; entries the bounce processor adds are recorded as events
//! of their message instead.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use diesel::Connection;
use serde_json::json;

use super::model::{self, After, NewSuppression, SuppressionRow};
use crate::audit::{self, Actor};
use crate::db;
use crate::db::pagination::Page;
use crate::domain::{parse_email, TenantId};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// One entry as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuppressionView {
    pub email: String,
    /// `hard_bounce`, `complaint`, `manual` or `unsubscribe`.
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub source_email_id: Option<uuid::Uuid>,
    pub detail: Option<String>,
    /// `broadcast` (an unsubscribe) or `null`: every stream.
    pub stream: Option<String>,
}

impl From<SuppressionRow> for SuppressionView {
    fn from(r: SuppressionRow) -> Self {
        SuppressionView {
            email: r.email,
            reason: r.reason,
            created_at: r.created_at,
            expires_at: r.expires_at,
            source_email_id: r.source_email_id,
            detail: r.detail,
            stream: r.stream,
        }
    }
}

/// `POST /v1/suppressions` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSuppression {
    pub email: String,
    /// Only `manual` may be added by hand.
    pub reason: Option<String>,
    /// A note kept with the entry (at most 1000 characters).
    pub detail: Option<String>,
}

/// `GET /v1/suppressions` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this address (exact, case-insensitive).
    pub email: Option<String>,
    /// Only entries with this reason: hard_bounce, complaint, manual or unsubscribe.
    pub reason: Option<String>,
    /// Entries per page, 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// next_cursor of the previous page.
    pub cursor: Option<String>,
}

const REASONS: [&str; 4] = ["hard_bounce", "complaint", "manual", "unsubscribe"];

fn address(field: &str, raw: &str) -> AppResult<String> {
    Ok(parse_email(field, raw)?.to_ascii_lowercase())
}

fn encode(a: &After) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{}", a.created_at.timestamp_micros(), a.email))
}

fn decode(s: &str) -> Option<After> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
    let (micros, email) = raw.split_once('|')?;
    Some(After {
        created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        email: email.to_string(),
    })
}

pub async fn list(
    state: &AppState,
    tenant: TenantId,
    q: ListQuery,
) -> AppResult<Page<SuppressionView>> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(AppError::invalid("limit", "must be between 1 and 100"));
    }
    let email = q
        .email
        .as_deref()
        .map(|e| address("email", e))
        .transpose()?;
    if let Some(r) = q.reason.as_deref() {
        if !REASONS.contains(&r) {
            return Err(AppError::invalid(
                "reason",
                "must be hard_bounce, complaint or manual",
            ));
        }
    }
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => {
            Some(decode(c).ok_or_else(|| AppError::invalid("cursor", "is not a valid cursor"))?)
        }
    };
    let reason = q.reason.clone();
    let mut rows = db::run(&state.pool, move |conn| {
        Ok(model::list(
            conn,
            tenant,
            email.as_deref(),
            reason.as_deref(),
            after.as_ref(),
            limit + 1,
        )?)
    })
    .await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| {
            encode(&After {
                created_at: r.created_at,
                email: r.email.clone(),
            })
        })
    } else {
        None
    };
    Ok(Page {
        data: rows.into_iter().map(SuppressionView::from).collect(),
        next_cursor,
    })
}

pub async fn create(
    state: &AppState,
    actor: &Actor,
    tenant: TenantId,
    body: CreateSuppression,
) -> AppResult<SuppressionView> {
    let email = address("email", &body.email)?;
    match body.reason.as_deref() {
        None | Some("manual") => {}
        Some(_) => return Err(AppError::invalid("reason", "must be \"manual\"")),
    }
    if let Some(d) = &body.detail {
        if d.chars().count() > 1000 {
            return Err(AppError::invalid(
                "detail",
                "must be at most 1000 characters",
            ));
        }
    }
    let entry = NewSuppression {
        tenant_id: tenant.0,
        email,
        reason: "manual",
        expires_at: None,
        source_email_id: None,
        detail: body.detail,
    };
    let actor = actor.clone();
    let row = db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let row = model::insert_manual(conn, &entry)?;
            if let Some(r) = &row {
                let changes = json!({"reason": r.reason, "detail": r.detail});
                audit::record(
                    conn,
                    &actor,
                    "suppression.added",
                    Some(tenant.0),
                    &r.email,
                    changes,
                )?;
            }
            Ok(row)
        })
    })
    .await?;
    row.map(SuppressionView::from)
        .ok_or_else(|| AppError::conflict("This address is already on the suppression list."))
}

pub async fn get(state: &AppState, tenant: TenantId, raw: &str) -> AppResult<SuppressionView> {
    let email = address("email", raw).map_err(|_| AppError::NotFound)?;
    db::run(&state.pool, move |conn| {
        Ok(model::find(conn, tenant, &email)?)
    })
    .await?
    .map(SuppressionView::from)
    .ok_or(AppError::NotFound)
}

pub async fn delete(state: &AppState, actor: &Actor, tenant: TenantId, raw: &str) -> AppResult<()> {
    let email = address("email", raw).map_err(|_| AppError::NotFound)?;
    let actor = actor.clone();
    let gone = db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let Some(r) = model::delete(conn, tenant, &email)? else {
                return Ok(false);
            };
            let changes = json!({"reason": r.reason, "expires_at": r.expires_at});
            audit::record(
                conn,
                &actor,
                "suppression.removed",
                Some(tenant.0),
                &r.email,
                changes,
            )?;
            Ok(true)
        })
    })
    .await?;
    if gone {
        Ok(())
    } else {
        Err(AppError::NotFound)
    }
}
