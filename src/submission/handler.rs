//! What the submission listener accepts: an AUTH with a tenant key holding
//! `send` (535 for anything else, an admin key included), then messages
//! through the API's send path, each service result mapped to the reply
//! code of API.md. Sessions per tenant are bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use uuid::Uuid;

use super::scheduled;
use crate::auth::extract::credential;
use crate::auth::Principal;
use crate::config::Secret;
use crate::domain::{Permission, TenantId};
use crate::emails::raw::{send_raw, RawSubmission};
use crate::error::AppError;
use crate::smtp_server::{Envelope, Handler, Identity, Reply};
use crate::state::AppState;

pub struct SubmissionHandler {
    state: AppState,
    /// Sessions per tenant, counted while authenticated (this node).
    sessions: Arc<Mutex<HashMap<Uuid, usize>>>,
    /// The same, across every node (slot budgets, `cluster::slots`).
    slots: crate::cluster::slots::Slots,
}

/// The slot budget of a tenant's authenticated SMTP sessions.
const SESSIONS: &str = "smtp_sessions";

/// An authenticated session. The key is kept (wiped on drop) so every
/// message re-checks it through the auth cache: a revoked key stops
/// working within `auth.cache_ttl_secs`, and argon2 is not run again.
struct Session {
    key: Secret,
    tenant: TenantId,
    sessions: Arc<Mutex<HashMap<Uuid, usize>>>,
    /// The tenant's cluster-wide session slot (issue 27); freed on drop.
    slot: Option<crate::cluster::slots::Slot>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.tenant.0) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.tenant.0);
            }
        }
    }
}

fn bad_credentials() -> Reply {
    Reply::new(535, "5.7.8 authentication credentials invalid")
}

fn temporary() -> Reply {
    Reply::new(451, "4.3.0 temporary failure, try again later")
}

/// A refusal of the send path as an SMTP reply (API.md "SMTP submission").
fn reply_for(e: AppError) -> Reply {
    match e {
        AppError::Validation {
            code: "from_domain_not_allowed",
            detail,
            errors,
        } => {
            let header = match errors.first().map(|e| e.field.as_str()) {
                Some("sender") => "Sender",
                Some("resent_from") => "Resent-From",
                Some("resent_sender") => "Resent-Sender",
                _ => "From",
            };
            Reply::new(550, format!("5.7.1 {header} domain not allowed: {detail}"))
        }
        AppError::Validation {
            code: crate::emails::header_set::MALFORMED,
            detail,
            ..
        } => Reply::new(554, format!("5.6.0 {detail}")),
        AppError::Validation {
            code: "message_too_large",
            detail,
            ..
        } => Reply::new(552, format!("5.3.4 {detail}")),
        AppError::Validation { detail, .. } => Reply::new(550, format!("5.6.0 {detail}")),
        AppError::TooManyRequests { detail, .. } => Reply::new(451, format!("4.7.0 {detail}")),
        AppError::Forbidden { detail, .. } => Reply::new(550, format!("5.7.1 {detail}")),
        AppError::Unauthorized => bad_credentials(),
        AppError::Internal(e) => {
            tracing::error!(error = %format!("{e:#}"), "SMTP submission failed");
            temporary()
        }
        _ => temporary(),
    }
}

impl SubmissionHandler {
    /// Starts the renewal of the session slots' leases (needs a runtime).
    pub fn new(state: AppState) -> Self {
        let slots = state.rates.slots(state.settings.cluster.lease_secs);
        slots.spawn_renewer();
        SubmissionHandler {
            state,
            sessions: Arc::default(),
            slots,
        }
    }

    fn session<'a>(&self, env: &'a Envelope) -> Option<&'a Session> {
        env.auth.as_ref()?.downcast_ref::<Session>()
    }

    /// The session's key, re-checked (cache hit on the steady path).
    async fn principal(&self, s: &Session) -> Result<Principal, Reply> {
        match credential(&self.state, s.key.expose(), None).await {
            Ok(k) if k.tenant_id == Some(s.tenant) && !k.tenant_suspended => Ok(Principal(k)),
            Ok(_) | Err(AppError::Unauthorized) => Err(bad_credentials()),
            Err(e) => Err(reply_for(e)),
        }
    }

    /// The tenant's request rate (`requests_per_minute`): one message counts
    /// as one request, as a `POST /v1/emails` would.
    async fn rate(&self, tenant: TenantId) -> Result<(), Reply> {
        use crate::limits::api::{admit, Subject};
        match admit(&self.state, Subject::Tenant(tenant)).await {
            Ok((_, None)) => Ok(()),
            Ok((_, Some(refused))) | Err(refused) => Err(reply_for(refused)),
        }
    }

    async fn accept(&self, s: &Session, m: RawSubmission) -> Reply {
        let who = match self.principal(s).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        match send_raw(&self.state, &who, m).await {
            Ok(id) => Reply::new(250, format!("2.0.0 queued as {id}")),
            Err(e) => reply_for(e),
        }
    }
}

#[async_trait]
impl Handler for SubmissionHandler {
    async fn auth(
        &self,
        peer: Option<SocketAddr>,
        _user: &str,
        password: &str,
    ) -> Result<Identity, Reply> {
        let key = match credential(&self.state, password, peer.map(|p| p.ip())).await {
            Ok(k) => k,
            Err(AppError::Unauthorized) => return Err(bad_credentials()),
            Err(AppError::TooManyRequests { .. }) => {
                return Err(Reply::new(
                    454,
                    "4.7.0 too many failed authentications from this address, try later",
                ))
            }
            Err(_) => return Err(Reply::new(454, "4.7.0 temporary authentication failure")),
        };
        // Admin keys, keys without `send`, suspended tenants: 535 alike.
        let tenant = match key.tenant_id {
            Some(t) if key.has(Permission::Send) && !key.tenant_suspended => t,
            _ => return Err(bad_credentials()),
        };
        let max = self.state.settings.submission.max_connections_per_tenant;
        {
            let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(tenant.0).or_insert(0);
            if *n >= max {
                return Err(Reply::new(
                    454,
                    format!("4.7.0 too many sessions for this tenant (at most {max})"),
                ));
            }
            *n += 1;
        }
        let mut session = Session {
            key: Secret::new(password),
            tenant,
            sessions: self.sessions.clone(),
            slot: None,
        };
        // Cluster-wide (issue 27): a slot of the tenant's session budget.
        match self.slots.take_for(tenant.0, SESSIONS, max as i64).await {
            Some(slot) => session.slot = Some(slot),
            None => {
                return Err(Reply::new(
                    454,
                    format!("4.7.0 too many sessions for this tenant (at most {max})"),
                ))
            }
        }
        Ok(Arc::new(session))
    }

    async fn mail(&self, env: &Envelope, _from: &str) -> Reply {
        let Some(s) = self.session(env) else {
            return Reply::new(530, "5.7.0 authentication required");
        };
        match self.rate(s.tenant).await {
            Ok(()) => Reply::new(250, "2.1.0 OK"),
            Err(r) => r,
        }
    }

    async fn rcpt(&self, _env: &Envelope, to: &str) -> Reply {
        match crate::domain::parse_email("to", to) {
            Ok(_) => Reply::new(250, "2.1.5 OK"),
            Err(_) => Reply::new(553, "5.1.3 not a valid recipient address"),
        }
    }

    async fn data(&self, env: Envelope, message: Vec<u8>) -> Reply {
        let Some(s) = self.session(&env) else {
            return Reply::new(530, "5.7.0 authentication required");
        };
        let scheduled_at = match scheduled::parse(&message, Utc::now()) {
            Ok(t) => t,
            Err(why) => return Reply::new(550, format!("5.5.4 {why}")),
        };
        let incoming = RawSubmission {
            recipients: env.rcpt_to.clone(),
            message,
            scheduled_at,
        };
        self.accept(s, incoming).await
    }
}
