//! Reading the audit log: admins see every entry (platform ones included),
//! a tenant key only its own tenant's.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{self, EntryRow, Filter};
use crate::db;
use crate::db::pagination::{Page, PageQuery, PageRequest};
use crate::domain::TenantId;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// `GET /v1/audit-log` query: filters plus the page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries of this tenant (admin keys; a tenant key always reads its own).
    pub tenant_id: Option<Uuid>,
    /// Only this kind of actor (admin_key, tenant_key, oauth_client, cli, user, system), or kind:id for one of them.
    pub actor: Option<String>,
    /// Only this action, e.g. tenant.created or key.revoked.
    pub action: Option<String>,
    /// At or after this instant (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Before this instant (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Entries per page, 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// next_cursor of the previous page.
    pub cursor: Option<String>,
}

const ACTOR_KINDS: [&str; 6] = [
    "admin_key",
    "tenant_key",
    "oauth_client",
    "cli",
    "user",
    "system",
];

impl AuditQuery {
    /// The filter and page; `scope` is the tenant of a tenant key.
    pub fn validate(self, scope: Option<TenantId>) -> AppResult<(Filter, PageRequest)> {
        let page = PageQuery {
            limit: self.limit,
            cursor: self.cursor,
        }
        .validate()?;
        let (actor_kind, actor_id) = match self.actor.as_deref() {
            None | Some("") => (None, None),
            Some(a) => {
                let (kind, id) = match a.split_once(':') {
                    Some((k, id)) => (k, Some(id.to_string())),
                    None => (a, None),
                };
                if !ACTOR_KINDS.contains(&kind) || id.as_ref().is_some_and(|i| i.len() > 100) {
                    return Err(AppError::invalid(
                        "actor",
                        "must be one of admin_key, tenant_key, oauth_client, cli, user, system (optionally kind:id)",
                    ));
                }
                (Some(kind.to_string()), id)
            }
        };
        if self.action.as_ref().is_some_and(|a| a.len() > 100) {
            return Err(AppError::invalid(
                "action",
                "must be at most 100 characters",
            ));
        }
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from > to {
                return Err(AppError::invalid("from", "must not be after to"));
            }
        }
        let tenant_id = match scope {
            // A tenant key never sees another tenant's entries: a foreign
            // tenant_id filter simply matches nothing of its own.
            Some(own) => match self.tenant_id {
                Some(t) if t != own.0 => return Ok((Filter::nothing(), page)),
                _ => Some(own.0),
            },
            None => self.tenant_id,
        };
        Ok((
            Filter {
                tenant_id,
                actor_kind,
                actor_id,
                action: self.action,
                from: self.from,
                to: self.to,
            },
            page,
        ))
    }
}

impl Filter {
    /// A filter no entry matches (an action name no code writes).
    fn nothing() -> Filter {
        Filter {
            action: Some(String::new()),
            ..Filter::default()
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActorView {
    /// `admin_key`, `tenant_key`, `oauth_client`, `cli`, `user` or `system`.
    pub kind: String,
    pub id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntryView {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor: ActorView,
    pub action: String,
    pub tenant_id: Option<Uuid>,
    pub target_id: Option<String>,
    pub request_id: Option<String>,
    /// What changed (`{"field": {"from", "to"}}` for updates); never a secret.
    #[schema(value_type = Object)]
    pub changes: serde_json::Value,
}

impl From<EntryRow> for AuditEntryView {
    fn from(r: EntryRow) -> Self {
        AuditEntryView {
            id: r.id,
            at: r.at,
            actor: ActorView {
                kind: r.actor_kind,
                id: r.actor_id,
            },
            action: r.action,
            tenant_id: r.tenant_id,
            target_id: r.target_id,
            request_id: r.request_id,
            changes: r.changes,
        }
    }
}

pub async fn list(
    state: &AppState,
    filter: Filter,
    page: PageRequest,
) -> AppResult<Page<AuditEntryView>> {
    let rows = db::run(&state.pool, move |conn| {
        Ok(model::list(conn, &filter, page)?)
    })
    .await?;
    Ok(Page::from_rows(
        rows,
        page,
        EntryRow::position,
        AuditEntryView::from,
    ))
}
