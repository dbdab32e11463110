//! The web console (issue 17): server-rendered pages under `/console` for
//! platform admins and tenant users, served by the `api` role (and `serve`).
//!
//! - `users`: roles onto the API permissions, creation, sign-in (argon2 only there);
//! - `sessions`: sessions (SHA-256 of the cookie's token in Postgres),
//!   one-time invitation links;
//! - `session`: the cookie, the [`users::ConsoleUser`] extractor (its
//!   `who` is a resolved [`crate::auth::Principal`], its `actor` names the
//!   user in the audit log), CSRF-checked forms ([`session::Post`]), error
//!   pages;
//! - `render`: templates compiled in, the strict CSP, the SVG chart;
//! - `pages/*`: one module per screen, each calling the same services as the
//!   JSON API (no SQL in a page);
//! - `model`: the console's own SQL (users, sessions, the queue overview).
//! - `invite_mail`: invitations mailed through the default relay.
//! - `device`: the device cookie that exempts a user's known browsers from
//!   the sign-in throttles strangers can spend.
//! - `totp`, `second_factor`, `totp_model`: TOTP (RFC 6238) as a second
//!   factor: the codes, enrolment and the sign-in's code step, their SQL.

/// `minijinja::context!` for any `Serialize` value (views, pages, rows).
macro_rules! ctx {
    (@pick $key:ident) => { &$key };
    (@pick $key:ident, $value:expr) => { &$value };
    ($($key:ident $(=> $value:expr)?),* $(,)?) => {
        minijinja::context! {
            $($key => minijinja::Value::from(minijinja::value::Serde(ctx!(@pick $key $(, $value)?)))),*
        }
    };
}

pub mod charts;
pub mod cli;
pub mod device;
pub mod format;
pub mod invite_mail;
pub mod model;
pub mod overview;
pub mod overview_model;
pub mod owner;
pub mod pages;
pub mod render;
pub mod second_factor;
pub mod session;
pub mod session_model;
pub mod sessions;
pub mod team;
pub mod totp;
pub mod totp_model;
pub mod users;

use std::net::IpAddr;

use actix_web::http::Method;
use actix_web::{web, HttpMessage, HttpRequest};
use serde::Serialize;

use crate::auth::failures::FailedAuthLimiter;
use crate::config::Settings;
use crate::domain::TenantId;
use crate::error::{AppError, AppResult};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;
use crate::tenants::model::TenantRef;
use users::ConsoleUser;

/// Sign-in throttles: failures per e-mail address and per client address,
/// and per device cookie for browsers the user signed in with before
/// (`device`: those are exempt from the first two).
#[derive(Clone)]
pub struct ConsoleState {
    pub by_email: FailedAuthLimiter<String>,
    pub by_ip: FailedAuthLimiter<IpAddr>,
    pub by_device: FailedAuthLimiter<String>,
    pub device: device::DeviceKey,
}

impl ConsoleState {
    pub fn new(settings: &Settings) -> Result<Self, crate::config::ConfigError> {
        let n = settings.console.login_failures_per_minute;
        Ok(Self {
            by_email: FailedAuthLimiter::new(n),
            by_ip: FailedAuthLimiter::new(n),
            by_device: FailedAuthLimiter::new(n),
            device: device::DeviceKey::from_settings(settings)?,
        })
    }

    /// The device cookie of `req` when it vouches for `email` (lower-case).
    pub fn known_device(&self, req: &HttpRequest, email: &str) -> Option<String> {
        let value = req.cookie(device::COOKIE)?.value().to_string();
        self.device
            .vouches(&value, email, chrono::Utc::now())
            .then_some(value)
    }

    /// Seconds to wait when a sign-in as `email` is throttled: a known
    /// browser by its own failures, any other by its address's and the
    /// e-mail's.
    pub fn blocked(&self, ip: Option<IpAddr>, email: &str, device: Option<&str>) -> Option<u64> {
        match device {
            Some(d) => self.by_device.blocked_key(&d.to_string()),
            None => ip
                .and_then(|ip| self.by_ip.blocked(ip))
                .or_else(|| self.by_email.blocked_key(&email.to_string())),
        }
    }

    /// Counts a failed sign-in (password or code) everywhere it applies.
    /// Counted across the nodes before it returns (`cluster::failures`).
    pub async fn failed(&self, ip: Option<IpAddr>, email: &str, device: Option<String>) {
        if let Some(ip) = ip {
            self.by_ip.failed_now(ip).await;
        }
        if !email.is_empty() && email.len() <= 254 {
            self.by_email.failed_key_now(email.to_string()).await;
        }
        if let Some(d) = device {
            self.by_device.failed_key_now(d).await;
        }
    }
}

macro_rules! page {
    ($m:expr, $p:expr, $h:path) => {
        Endpoint::new($m, $p, Access::Console, || web::route().to($h))
    };
}

pub fn endpoints() -> Vec<Endpoint> {
    use pages::*;
    let (get, post) = (Method::GET, Method::POST);
    vec![
        // A browser opening the base URL lands on the console (which asks it
        // to sign in); the API lives under `/v1`, its reference at `/docs`.
        page!(get.clone(), "/", front),
        page!(get.clone(), "/console", overview::show),
        page!(get.clone(), "/console/login", auth::login_form),
        page!(post.clone(), "/console/login", auth::login),
        page!(post.clone(), "/console/logout", auth::logout),
        page!(get.clone(), "/console/login/totp", login_totp::form),
        page!(post.clone(), "/console/login/totp", login_totp::submit),
        page!(get.clone(), "/console/account", account::show),
        page!(post.clone(), "/console/account/totp/setup", account::setup),
        page!(
            post.clone(),
            "/console/account/totp/enable",
            account::enable
        ),
        page!(
            post.clone(),
            "/console/account/totp/disable",
            account::disable
        ),
        page!(get.clone(), "/console/invite/{token}", auth::invite_form),
        page!(post.clone(), "/console/invite/{token}", auth::invite),
        page!(get.clone(), "/console/tenants", tenants::list),
        page!(post.clone(), "/console/tenants", tenants::create),
        page!(get.clone(), "/console/tenants/{id}", tenants::show),
        page!(post.clone(), "/console/tenants/{id}", tenants::change),
        page!(
            get.clone(),
            "/console/tenants/{id}/reputation",
            reputation::show
        ),
        page!(
            post.clone(),
            "/console/tenants/{id}/users",
            tenants::invite_user
        ),
        page!(
            post.clone(),
            "/console/tenants/{id}/users/{user_id}",
            tenants::change_user
        ),
        page!(get.clone(), "/console/keys", keys::list),
        page!(post.clone(), "/console/keys", keys::create),
        page!(post.clone(), "/console/keys/{id}/revoke", keys::revoke),
        page!(post.clone(), "/console/oauth-clients", keys::create_client),
        page!(
            post.clone(),
            "/console/oauth-clients/{id}/revoke",
            keys::revoke_client
        ),
        page!(get.clone(), "/console/messages", messages::list),
        page!(get.clone(), "/console/messages/{id}", messages::show),
        page!(
            get.clone(),
            "/console/messages/{id}/html",
            messages::html_body
        ),
        page!(get.clone(), "/console/domains", domains::list),
        page!(post.clone(), "/console/domains", domains::create),
        page!(
            post.clone(),
            "/console/domains/{id}/verify",
            domains::verify
        ),
        page!(get.clone(), "/console/suppressions", suppressions::list),
        page!(post.clone(), "/console/suppressions", suppressions::create),
        page!(
            post.clone(),
            "/console/suppressions/remove",
            suppressions::remove
        ),
        page!(get.clone(), "/console/webhooks", webhooks::list),
        page!(post.clone(), "/console/webhooks", webhooks::create),
        page!(post.clone(), "/console/webhooks/{id}/test", webhooks::test),
        page!(
            post.clone(),
            "/console/webhooks/{id}/delete",
            webhooks::delete
        ),
        page!(
            post.clone(),
            "/console/webhooks/deliveries/{id}/retry",
            webhooks::retry
        ),
        page!(get.clone(), "/console/inbound", inbound::list),
        page!(post.clone(), "/console/inbound/routes", inbound::create),
        page!(
            post.clone(),
            "/console/inbound/routes/{id}/delete",
            inbound::delete
        ),
        page!(get.clone(), "/console/inbound/{id}", inbound::show),
        page!(
            get.clone(),
            "/console/inbound/{id}/attachments/{index}",
            inbound::attachment
        ),
        page!(get.clone(), "/console/usage", usage::show),
        page!(get.clone(), "/console/queue", queue::show),
    ]
}

/// What every page's layout needs.
#[derive(Serialize)]
pub struct Layout {
    pub email: String,
    pub role: &'static str,
    pub admin: bool,
    pub csrf: String,
    /// The tenant the page acts for, as `?tenant=` (admins) or the user's own.
    pub tenant: Option<String>,
    /// Its name, shown where people look (the id stays secondary).
    pub tenant_name: Option<String>,
    pub tenant_query: String,
    pub active: &'static str,
    /// The user's tenant is suspended: the banner, and every form is 403.
    pub suspended: bool,
    pub suspended_notice: &'static str,
    /// The page's tenant is paused for its reputation: why (the banner).
    pub paused: Option<String>,
}

impl Layout {
    /// The layout of a page acting for `tenant`; its name comes from the
    /// tenant cache (none if the tenant is gone).
    pub async fn new(
        state: &AppState,
        user: &ConsoleUser,
        tenant: Option<TenantId>,
        active: &'static str,
    ) -> Layout {
        let tenant_name = match tenant {
            Some(t) => state
                .tenants
                .get(&TenantRef::Id(t.0))
                .await
                .ok()
                .map(|row| row.name.clone()),
            None => None,
        };
        let paused = tenant.and_then(|t| state.reputation.reason(t.0));
        let tenant = tenant.map(|t| t.0.to_string());
        Layout {
            email: user.email.clone(),
            role: user.role.as_str(),
            admin: user.is_admin(),
            csrf: user.csrf().to_string(),
            tenant_query: match (&tenant, user.is_admin()) {
                (Some(t), true) => format!("?tenant={t}"),
                _ => String::new(),
            },
            tenant,
            tenant_name,
            active,
            suspended: user.who.0.tenant_suspended,
            suspended_notice: session::SUSPENDED,
            paused,
        }
    }
}

/// The tenant a tenant-scoped page acts for. A tenant user acts for their
/// own tenant: naming another (by id or external id) is a 404, exactly like
/// an unknown one. An admin names one with `?tenant=` (or the form's
/// `tenant` field); `None` when they did not.
pub async fn tenant_for(
    state: &AppState,
    user: &ConsoleUser,
    asked: Option<&str>,
) -> AppResult<Option<TenantId>> {
    let asked = asked.map(str::trim).filter(|s| !s.is_empty());
    match (user.tenant(), asked) {
        (Some(own), None) => Ok(Some(own)),
        (Some(own), Some(a)) => {
            let row = state.tenants.get(&TenantRef::parse(a)).await?;
            if row.id == own.0 {
                Ok(Some(own))
            } else {
                Err(AppError::NotFound)
            }
        }
        (None, Some(a)) => {
            let row = state.tenants.get(&TenantRef::parse(a)).await?;
            if row.status == "deleted" {
                return Err(AppError::NotFound);
            }
            Ok(Some(TenantId(row.id)))
        }
        (None, None) => Ok(None),
    }
}

/// The request id the HTTP layer assigned (for audit entries).
pub fn request_id(req: &HttpRequest) -> Option<String> {
    req.extensions()
        .get::<tracing_actix_web::RequestId>()
        .map(|id| id.to_string())
}

/// `?tenant=` of a page's query.
#[derive(Debug, Default, serde::Deserialize)]
pub struct TenantQuery {
    pub tenant: Option<String>,
}
