//! The audit log (API.md "Audit log"): who created, changed, suspended or
//! deleted tenants, keys, webhooks, domains, suppressions and templates. An entry is written by [`record`] on
//! the connection of the change, inside its transaction, so a change that
//! rolls back leaves no entry and a committed change always has one. A new
//! capability adds an action with one call:
//! `audit::record(conn, actor, Action::new("domain.verified"), tenant, target, changes)?`.
//! `changes` never carries a secret: passwords appear as `password_set`.

pub mod model;
pub mod routes;
pub mod service;

use actix_web::{HttpMessage, HttpRequest};
use diesel::PgConnection;
use serde_json::Value;
use uuid::Uuid;

use crate::auth::Principal;
use crate::domain::KeyKind;

/// Who acted, as the audit log names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActorKind {
    AdminKey,
    TenantKey,
    OauthClient,
    Cli,
    /// A console user (`src/console/`); the id is the user's.
    User,
    /// Postline itself: a background job (the domain recheck), no id.
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::AdminKey => "admin_key",
            ActorKind::TenantKey => "tenant_key",
            ActorKind::OauthClient => "oauth_client",
            ActorKind::Cli => "cli",
            ActorKind::User => "user",
            ActorKind::System => "system",
        }
    }
}

/// The resolved actor of a change plus the request it came with; services
/// take this, never an actix type.
#[derive(Clone, Debug)]
pub struct Actor {
    pub kind: ActorKind,
    /// The API key's id (`None` for the CLI).
    pub id: Option<Uuid>,
    /// The `x-request-id` the HTTP layer assigned.
    pub request_id: Option<String>,
}

impl Actor {
    /// The caller of an HTTP request, with its request id.
    pub fn of(who: &Principal, req: &HttpRequest) -> Actor {
        let request_id = req
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| id.to_string());
        Actor::key(who, request_id)
    }

    /// The key of `who`, for a change made on its behalf deeper in a flow
    /// (e.g. a tenant auto-created by a send).
    pub fn key(who: &Principal, request_id: Option<String>) -> Actor {
        Actor {
            kind: match who.0.kind {
                _ if who.0.console_user => ActorKind::User,
                _ if who.0.oauth_client => ActorKind::OauthClient,
                KeyKind::Admin => ActorKind::AdminKey,
                KeyKind::Live => ActorKind::TenantKey,
            },
            id: Some(who.0.api_key_id),
            request_id,
        }
    }

    /// A background job of Postline (e.g. the domain recheck verifying a
    /// domain).
    pub fn system() -> Actor {
        Actor {
            kind: ActorKind::System,
            id: None,
            request_id: None,
        }
    }

    /// `postline admin-key create` and other CLI commands.
    pub fn cli() -> Actor {
        Actor {
            kind: ActorKind::Cli,
            id: None,
            request_id: None,
        }
    }
}

/// Writes one entry on `conn` — call it inside the transaction of the change.
pub fn record(
    conn: &mut PgConnection,
    actor: &Actor,
    action: &'static str,
    tenant_id: Option<Uuid>,
    target_id: impl ToString,
    changes: Value,
) -> diesel::QueryResult<()> {
    model::NewEntry {
        id: Uuid::new_v4(),
        tenant_id,
        actor_kind: actor.kind.as_str(),
        actor_id: actor.id.map(|id| id.to_string()),
        action,
        target_id: Some(target_id.to_string()),
        request_id: actor.request_id.clone(),
        changes,
    }
    .insert(conn)
}

/// The fields that differ between two JSON objects (views, which never hold
/// a secret), as `{"field": {"from": …, "to": …}}`.
pub fn diff(before: &Value, after: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let (Value::Object(b), Value::Object(a)) = (before, after) {
        for (k, to) in a {
            let from = b.get(k).unwrap_or(&Value::Null);
            if from != to {
                out.insert(k.clone(), serde_json::json!({"from": from, "to": to}));
            }
        }
    }
    Value::Object(out)
}
