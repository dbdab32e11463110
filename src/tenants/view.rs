//! The tenant as the API shows it. The SMTP password never leaves the
//! database: only `password_set` says whether there is one.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::model::TenantRow;
use crate::delivery::pools::TenantPools;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SmtpView {
    pub host: String,
    pub port: i32,
    pub username: Option<String>,
    pub tls: String,
    pub password_set: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RateLimitView {
    pub requests_per_minute: Option<i32>,
    pub emails_per_day: Option<i32>,
    pub emails_per_second: Option<i32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    pub id: Uuid,
    pub external_id: Option<String>,
    pub name: String,
    pub domain: Option<String>,
    /// `from_name` and `reply_to` defaults.
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    pub smtp: Option<SmtpView>,
    pub rate_limit: RateLimitView,
    /// Days message content is kept; `null` = the platform's `retention.content_days`.
    pub retention_content_days: Option<i32>,
    /// The reputation policy override (any of `[reputation]`'s keys but
    /// `check_secs`); `null` = the platform's defaults.
    #[schema(value_type = Option<Object>)]
    pub reputation_policy: Option<serde_json::Value>,
    /// The egress pool of each stream (issue 26); `default` unless assigned.
    pub pools: TenantPools,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<TenantRow> for TenantView {
    fn from(t: TenantRow) -> Self {
        let smtp = t.smtp_host.map(|host| SmtpView {
            host,
            port: t.smtp_port.unwrap_or(587),
            username: t.smtp_username,
            tls: t.smtp_tls.unwrap_or_else(|| "starttls".into()),
            password_set: t.smtp_password_enc.is_some(),
        });
        TenantView {
            id: t.id,
            external_id: t.external_id,
            name: t.name,
            domain: t.domain,
            settings: t.settings,
            smtp,
            rate_limit: RateLimitView {
                requests_per_minute: t.requests_per_minute,
                emails_per_day: t.emails_per_day,
                emails_per_second: t.emails_per_second,
            },
            retention_content_days: t.retention_content_days,
            reputation_policy: t.reputation_policy,
            pools: TenantPools::from_json(&t.pools),
            status: t.status,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}
