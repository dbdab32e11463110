//! Tenant request bodies and their validation. Create and update share one
//! patch type: a create is a patch applied to a blank tenant, so both paths
//! validate exactly the same way.

use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::model::TenantRow;
use crate::config::{Secret, TlsMode};
use crate::crypto::Vault;
use crate::delivery::pools::{PoolNames, TenantPools};
use crate::domain::{has_line_break_or_nul, parse_email, parse_hostname};
use crate::error::{AppError, AppResult, FieldError};
use crate::net_guard::Guard;

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub fn nullable<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    #[serde(default, deserialize_with = "nullable")]
    pub from_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub reply_to: Option<Option<String>>,
    /// Default open and click tracking of the tenant's mail (issue 29);
    /// `null` = off.
    #[serde(default, deserialize_with = "nullable")]
    pub tracking: Option<Option<crate::tracking::TrackInput>>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpPatch {
    pub host: Option<String>,
    pub port: Option<u16>,
    #[serde(default, deserialize_with = "nullable")]
    pub username: Option<Option<String>>,
    /// Wiped from memory once sealed; `Debug` shows `[redacted]`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub password: Option<Option<Secret>>,
    pub tls: Option<TlsMode>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPatch {
    #[serde(default, deserialize_with = "nullable")]
    pub requests_per_minute: Option<Option<i32>>,
    #[serde(default, deserialize_with = "nullable")]
    pub emails_per_day: Option<Option<i32>>,
    #[serde(default, deserialize_with = "nullable")]
    pub emails_per_second: Option<Option<i32>>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusInput {
    Active,
    Suspended,
}

/// `POST /v1/tenants`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    pub external_id: Option<String>,
    pub domain: Option<String>,
    pub settings: Option<SettingsPatch>,
    pub smtp: Option<SmtpPatch>,
    pub rate_limit: Option<RateLimitPatch>,
    /// Days message content is kept (1-3650); default `retention.content_days`.
    pub retention_content_days: Option<i32>,
}

/// `PUT`/`PATCH /v1/tenants/{id}`: only the given fields change.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub external_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub domain: Option<Option<String>>,
    pub settings: Option<SettingsPatch>,
    #[serde(default, deserialize_with = "nullable")]
    pub smtp: Option<Option<SmtpPatch>>,
    pub rate_limit: Option<RateLimitPatch>,
    /// Days message content is kept (1-3650); `null` = `retention.content_days`.
    #[serde(default, deserialize_with = "nullable")]
    pub retention_content_days: Option<Option<i32>>,
    pub status: Option<StatusInput>,
    /// Reputation policy override (issue 25): any of `mode`, `window_hours`,
    /// `min_volume`, `bounce_rate_warning`, `bounce_rate_pause`,
    /// `complaint_rate_warning`, `complaint_rate_pause`; `null` = defaults.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    pub reputation_policy: Option<Option<Value>>,
    /// Egress pool per stream (issue 26); a name not configured → 422
    /// `unknown_pool`.
    pub pools: Option<PoolsPatch>,
}

/// `"pools": {"transactional": "<pool>", "broadcast": "<pool>"}`: only the
/// given streams change.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolsPatch {
    pub transactional: Option<String>,
    pub broadcast: Option<String>,
}

impl PoolsPatch {
    /// Every named pool exists (`default` or a `[[delivery.pools]]` name).
    pub fn check(&self, known: &PoolNames) -> AppResult<()> {
        let given = [
            ("pools.transactional", &self.transactional),
            ("pools.broadcast", &self.broadcast),
        ];
        let errors: Vec<FieldError> = given
            .into_iter()
            .filter_map(|(field, name)| Some((field, name.as_deref()?)))
            .filter(|(_, name)| !known.contains(name))
            .map(|(field, name)| {
                let shown: String = name.chars().take(64).collect();
                FieldError::new(field, format!("no egress pool named {shown:?}"))
            })
            .collect();
        if errors.is_empty() {
            return Ok(());
        }
        let AppError::Validation { detail, errors, .. } = AppError::invalid_fields(errors) else {
            return Err(AppError::invalid("pools", "unknown pool"));
        };
        Err(AppError::Validation {
            code: "unknown_pool",
            detail,
            errors,
        })
    }

    fn apply(self, row: &mut TenantRow) {
        let mut pools = TenantPools::from_json(&row.pools);
        if let Some(t) = self.transactional {
            pools.transactional = t;
        }
        if let Some(b) = self.broadcast {
            pools.broadcast = b;
        }
        row.pools = pools.to_json();
    }
}

impl From<CreateTenant> for UpdateTenant {
    fn from(c: CreateTenant) -> Self {
        UpdateTenant {
            name: Some(c.name),
            external_id: c.external_id.map(Some),
            domain: c.domain.map(Some),
            settings: c.settings,
            smtp: c.smtp.map(Some),
            rate_limit: c.rate_limit,
            retention_content_days: c.retention_content_days.map(Some),
            status: None,
            reputation_policy: None,
            pools: None,
        }
    }
}

/// The longest per-tenant content retention (ten years; the column's CHECK).
pub const MAX_RETENTION_DAYS: i32 = 3650;

/// The context string a tenant's SMTP password is sealed under.
pub fn smtp_password_context(tenant: uuid::Uuid) -> String {
    format!("tenant:{tenant}:smtp_password")
}

fn check_text(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: &str,
    max: usize,
) -> Option<String> {
    let v = value.trim();
    if v.is_empty() {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if v.chars().count() > max {
        errors.push(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    } else if has_line_break_or_nul(v) || v.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            "must not contain control characters",
        ));
    } else {
        return Some(v.to_string());
    }
    None
}

fn check_external_id(errors: &mut Vec<FieldError>, raw: &str) -> Option<String> {
    let ok = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && raw.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
        && uuid::Uuid::parse_str(raw).is_err();
    if ok {
        Some(raw.to_string())
    } else {
        errors.push(FieldError::new(
            "external_id",
            "must be 1-64 characters of a-z, 0-9, '-', '_' or '.', start with a letter or digit, and not be a UUID",
        ));
        None
    }
}

fn collect<T>(errors: &mut Vec<FieldError>, r: AppResult<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(AppError::Validation { errors: e, .. }) => {
            errors.extend(e);
            None
        }
        Err(_) => None,
    }
}

fn apply_limit(
    errors: &mut Vec<FieldError>,
    field: &str,
    target: &mut Option<i32>,
    patch: Option<Option<i32>>,
) {
    match patch {
        None => {}
        Some(Some(v)) if v < 1 => {
            errors.push(FieldError::new(field, "must be a positive integer or null"))
        }
        Some(v) => *target = v,
    }
}

impl UpdateTenant {
    /// Applies this patch to `row`, validating every given field. All problems
    /// are reported together; `row` is only meaningful when this returns `Ok`.
    pub fn apply(self, row: &mut TenantRow, vault: &Vault, relays: Guard) -> AppResult<()> {
        let mut errors = Vec::new();
        if let Some(name) = self.name {
            if let Some(v) = check_text(&mut errors, "name", &name, 200) {
                row.name = v;
            }
        }
        match self.external_id {
            None => {}
            Some(None) => row.external_id = None,
            Some(Some(ext)) => row.external_id = check_external_id(&mut errors, &ext),
        }
        match self.domain {
            None => {}
            Some(None) => row.domain = None,
            Some(Some(d)) => row.domain = collect(&mut errors, parse_hostname("domain", &d)),
        }
        if let Some(s) = self.settings {
            apply_settings(&mut errors, row, s);
        }
        match self.smtp {
            None => {}
            Some(None) => clear_smtp(row),
            Some(Some(s)) => apply_smtp(&mut errors, row, s, vault, relays),
        }
        if let Some(rl) = self.rate_limit {
            apply_limit(
                &mut errors,
                "rate_limit.requests_per_minute",
                &mut row.requests_per_minute,
                rl.requests_per_minute,
            );
            apply_limit(
                &mut errors,
                "rate_limit.emails_per_day",
                &mut row.emails_per_day,
                rl.emails_per_day,
            );
            apply_limit(
                &mut errors,
                "rate_limit.emails_per_second",
                &mut row.emails_per_second,
                rl.emails_per_second,
            );
        }
        match self.retention_content_days {
            None => {}
            Some(Some(d)) if !(1..=MAX_RETENTION_DAYS).contains(&d) => {
                errors.push(FieldError::new(
                    "retention_content_days",
                    format!("must be between 1 and {MAX_RETENTION_DAYS}, or null"),
                ))
            }
            Some(d) => row.retention_content_days = d,
        }
        match self.reputation_policy {
            None => {}
            Some(None) => row.reputation_policy = None,
            Some(Some(v)) => match crate::reputation::policy::check_override(&v) {
                Ok(clean) => row.reputation_policy = Some(clean),
                Err(e) => errors.extend(e),
            },
        }
        if let Some(pools) = self.pools {
            pools.apply(row);
        }
        if let Some(status) = self.status {
            row.status = match status {
                StatusInput::Active => "active",
                StatusInput::Suspended => "suspended",
            }
            .to_string();
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(AppError::invalid_fields(errors))
        }
    }
}

fn apply_settings(errors: &mut Vec<FieldError>, row: &mut TenantRow, s: SettingsPatch) {
    let mut settings = match row.settings.take() {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    match s.from_name {
        None => {}
        Some(None) => {
            settings.remove("from_name");
        }
        Some(Some(n)) => {
            if let Some(v) = check_text(errors, "settings.from_name", &n, 200) {
                settings.insert("from_name".into(), json!(v));
            }
        }
    }
    match s.reply_to {
        None => {}
        Some(None) => {
            settings.remove("reply_to");
        }
        Some(Some(r)) => {
            if let Some(v) = collect(errors, parse_email("settings.reply_to", &r)) {
                settings.insert("reply_to".into(), json!(v));
            }
        }
    }
    match s.tracking {
        None => {}
        Some(None) => {
            settings.remove("tracking");
        }
        Some(Some(t)) => {
            settings.insert("tracking".into(), json!(t));
        }
    }
    row.settings = Value::Object(settings);
}

fn clear_smtp(row: &mut TenantRow) {
    row.smtp_host = None;
    row.smtp_port = None;
    row.smtp_username = None;
    row.smtp_password_enc = None;
    row.smtp_tls = None;
}

fn apply_smtp(
    errors: &mut Vec<FieldError>,
    row: &mut TenantRow,
    s: SmtpPatch,
    vault: &Vault,
    relays: Guard,
) {
    let host = match s.host {
        Some(h) => collect(errors, parse_hostname("smtp.host", &h)).and_then(|h| {
            // The SSRF guard (delivery.allow_private_relays): checked again,
            // after DNS, when the worker connects.
            match relays.check_host(&h) {
                Ok(()) => Some(h),
                Err(r) => {
                    errors.push(FieldError::new(
                        "smtp.host",
                        format!(
                            "is not allowed: {}",
                            r.explained("delivery.allow_private_relays")
                        ),
                    ));
                    None
                }
            }
        }),
        None if row.smtp_host.is_some() => row.smtp_host.clone(),
        None => {
            errors.push(FieldError::new("smtp.host", "is required"));
            None
        }
    };
    let port = s.port.map(i32::from).or(row.smtp_port).unwrap_or(587);
    if port == 0 {
        errors.push(FieldError::new("smtp.port", "must be between 1 and 65535"));
    }
    let tls = s
        .tls
        .map(|t| t.as_str().to_string())
        .or_else(|| row.smtp_tls.clone())
        .unwrap_or_else(|| "starttls".into());
    match s.username {
        None => {}
        Some(None) => row.smtp_username = None,
        Some(Some(u)) => row.smtp_username = check_text(errors, "smtp.username", &u, 320),
    }
    match s.password {
        None => {}
        Some(None) => row.smtp_password_enc = None,
        Some(Some(p)) if p.is_empty() || p.expose().len() > 1024 => {
            errors.push(FieldError::new("smtp.password", "must be 1-1024 bytes"))
        }
        Some(Some(p)) => {
            row.smtp_password_enc =
                Some(vault.seal(p.expose().as_bytes(), &smtp_password_context(row.id)))
        }
    }
    row.smtp_host = host;
    row.smtp_port = Some(port);
    row.smtp_tls = Some(tls);
}
