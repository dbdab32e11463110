//! Webhook request bodies and their validation: the URL (through the SSRF
//! guard), the event filter, the description.

use reqwest::Url;
use serde::Deserialize;

use super::EVENTS;
use crate::error::{AppError, AppResult, FieldError};
use crate::net_guard::Guard;
use crate::tenants::input::nullable;

const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 500;

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub url: String,
    /// Events to receive: email.queued, email.scheduled, email.canceled,
    /// email.delivered, email.deferred,
    /// email.bounced, email.failed, email.suppressed, email.complained, email.unsubscribed,
    /// email.received (inbound routes name their endpoint and get it anyway),
    /// email.opened, email.clicked, domain.verified, domain.failed,
    /// tenant.reputation_warning, tenant.paused, tenant.reinstated, or "*" for all of them. The test ping
    /// (POST .../test) is a webhook.test event, sent whatever this list holds.
    pub events: Vec<String>,
    pub description: Option<String>,
}

/// `PUT /v1/webhooks/{id}`: only the given fields change. `enabled: true`
/// turns an endpoint back on after a 410 disabled it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    /// Events to receive (see CreateWebhook.events); webhook.test pings are sent regardless.
    pub events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

/// The host exactly as written in `raw` (before URL normalisation turned
/// `0x7f.1` into `127.0.0.1`).
fn raw_host(raw: &str) -> Option<&str> {
    let rest = raw.split_once("://")?.1;
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        return host_port.find(']').map(|i| &host_port[..=i]);
    }
    host_port.split(':').next()
}

/// Parses a webhook URL and applies the SSRF guard to its host as written:
/// IP literals in any spelling, local and metadata names. Names are checked
/// again after DNS when the dispatcher connects.
pub fn parse_url(raw: &str, guard: Guard) -> Result<Url, String> {
    if raw.len() > MAX_URL {
        return Err(format!("must be at most {MAX_URL} characters"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".into());
    }
    let url = Url::parse(raw).map_err(|_| "is not a valid URL".to_string())?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("must be an http or https URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    let refused = |r: crate::net_guard::Refusal| {
        format!(
            "is not allowed: {}",
            r.explained("webhooks.allow_private_targets")
        )
    };
    match url.host() {
        None => return Err("must name a host".into()),
        Some(url::Host::Domain(d)) => guard.check_host(d).map_err(refused)?,
        Some(url::Host::Ipv6(ip)) => guard.check_ip(ip.into()).map_err(refused)?,
        Some(url::Host::Ipv4(ip)) => {
            guard.check_ip(ip.into()).map_err(refused)?;
            let written = raw_host(raw).unwrap_or_default().trim_end_matches('.');
            if !guard.allows_private() && !written.eq_ignore_ascii_case(&ip.to_string()) {
                return Err(refused(crate::net_guard::Refusal::ObfuscatedIpv4(
                    written.to_string(),
                )));
            }
        }
    }
    Ok(url)
}

/// `["*"]` or a non-empty list of known event names (sorted, de-duplicated).
pub fn parse_events(list: &[String]) -> Result<Vec<String>, FieldError> {
    if list.is_empty() {
        return Err(FieldError::new(
            "events",
            "must name at least one event or \"*\"",
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        if e == "*" {
            if list.len() > 1 {
                return Err(FieldError::new(
                    format!("events[{i}]"),
                    "\"*\" must be the only entry",
                ));
            }
        } else if !EVENTS.contains(&e.as_str()) {
            return Err(FieldError::new(
                format!("events[{i}]"),
                format!(
                    "unknown event '{e}'; expected one of {} or \"*\"",
                    EVENTS.join(", ")
                ),
            ));
        }
        out.push(e.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn description(errors: &mut Vec<FieldError>, raw: String) -> Option<String> {
    let d = raw.trim();
    if d.chars().count() > MAX_DESCRIPTION {
        errors.push(FieldError::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    } else if d.contains('\0') {
        errors.push(FieldError::new("description", "must not contain NUL"));
    }
    Some(d.to_string()).filter(|d| !d.is_empty())
}

/// A validated patch: the values to set.
#[derive(Debug, Default)]
pub struct WebhookChanges {
    pub url: Option<String>,
    /// Events to receive (see CreateWebhook.events); webhook.test pings are sent regardless.
    pub events: Option<Vec<String>>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

impl UpdateWebhook {
    pub fn validate(self, guard: Guard) -> AppResult<WebhookChanges> {
        let mut errors = Vec::new();
        let url = self.url.and_then(|u| match parse_url(&u, guard) {
            Ok(url) => Some(url.to_string()),
            Err(why) => {
                errors.push(FieldError::new("url", why));
                None
            }
        });
        let events = self.events.and_then(|e| match parse_events(&e) {
            Ok(list) => Some(list),
            Err(fe) => {
                errors.push(fe);
                None
            }
        });
        let description = self
            .description
            .map(|d| d.and_then(|d| description(&mut errors, d)));
        if errors.is_empty() {
            Ok(WebhookChanges {
                url,
                events,
                description,
                enabled: self.enabled,
            })
        } else {
            Err(AppError::invalid_fields(errors))
        }
    }
}

impl From<CreateWebhook> for UpdateWebhook {
    fn from(c: CreateWebhook) -> Self {
        UpdateWebhook {
            url: Some(c.url),
            events: Some(c.events),
            description: c.description.map(Some),
            enabled: Some(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_guarded_as_written() {
        let strict = Guard::new(false);
        for bad in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:9000/hook",
            "http://10.0.0.5/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://134744072/",
            "ftp://hooks.example.com/",
            "http://user:pw@hooks.example.com/",
            "http://hooks.example.com/ x",
        ] {
            assert!(parse_url(bad, strict).is_err(), "{bad}");
        }
        assert!(parse_url("https://hooks.example.com/postline?x=1", strict).is_ok());
        assert!(parse_url("http://8.8.8.8:8080/", strict).is_ok());
        let open = Guard::new(true);
        assert!(parse_url("http://127.0.0.1:9/", open).is_ok());
        assert!(parse_url("http://169.254.169.254/", open).is_err());
        assert!(parse_url("http://0xa9fea9fe/", open).is_err());
    }

    #[test]
    fn event_filters() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_events(&s(&["*"])).unwrap(), s(&["*"]));
        assert_eq!(
            parse_events(&s(&["email.failed", "email.delivered", "email.failed"])).unwrap(),
            s(&["email.delivered", "email.failed"])
        );
        assert!(parse_events(&s(&[])).is_err());
        assert!(parse_events(&s(&["*", "email.failed"])).is_err());
        assert!(parse_events(&s(&["email.teleported"])).is_err());
    }
}
