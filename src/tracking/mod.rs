//! Open and click tracking (issue 29; API.md "Open and click tracking").
//!
//! - [`settings`] — `tracking.*`;
//! - [`token`] — self-contained signed links (`/c/{payload}.{sig}`,
//!   `/o/{payload}.{sig}.gif`);
//! - [`rewrite`] — links and pixel, in the worker's prepare step (before DKIM);
//! - [`host`] — which base URL a message's links use (the sending domain's
//!   `track.<domain>` record when it checks ok, else `tracking.public_url`);
//! - [`routes`] — the two public endpoints, answered without the database;
//! - [`events`], [`machine`], [`model`] — hits written after, in batches,
//!   with the machine verdict.
//!
//! Tracking off (the default) leaves the message exactly as it was: the
//! prepare step does not touch a row whose `track` is 0.

pub mod events;
pub mod host;
pub mod machine;
pub mod model;
pub mod rewrite;
pub mod routes;
pub mod settings;
pub mod token;

use std::sync::Arc;

pub use settings::TrackingSettings;

use crate::config::Settings;
use crate::db::PgPool;

/// `emails.track` bits.
pub const OPENS: i16 = 1;
pub const HTML_LINKS: i16 = 2;
pub const TEXT_LINKS: i16 = 4;

/// Per message `"track": {"opens", "clicks", "links"}` (send bodies, the
/// tenant's `settings.tracking`). Absent members fall back to the tenant's
/// default; `links` (an addition to the contract, for Postmark's
/// `TrackLinks`) says which parts' links clicks cover, `html` by default.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct TrackInput {
    pub opens: Option<bool>,
    pub clicks: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<LinkParts>,
}

/// Which parts' links are tracked.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LinkParts {
    Html,
    Text,
    HtmlAndText,
}

impl LinkParts {
    pub fn bits(self) -> i16 {
        match self {
            LinkParts::Html => HTML_LINKS,
            LinkParts::Text => TEXT_LINKS,
            LinkParts::HtmlAndText => HTML_LINKS | TEXT_LINKS,
        }
    }
}

/// A message's `emails.track`: the body's choice over the tenant's default
/// (`settings.tracking` of the tenant row), member by member.
pub fn resolve(asked: Option<TrackInput>, tenant: &serde_json::Value) -> i16 {
    let default: TrackInput = tenant
        .get("tracking")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let asked = asked.unwrap_or_default();
    let opens = asked.opens.or(default.opens).unwrap_or(false);
    let clicks = match asked.clicks.or(default.clicks).unwrap_or(false) {
        true => asked
            .links
            .or(default.links)
            .unwrap_or(LinkParts::Html)
            .bits(),
        false => 0,
    };
    (if opens { OPENS } else { 0 }) | clicks
}

/// Postmark's `TrackLinks` as `(clicks, links)`; `None` for a value
/// Postmark does not have.
pub fn postmark_links(v: &str) -> Option<(bool, Option<LinkParts>)> {
    match v {
        "None" => Some((false, None)),
        "HtmlOnly" => Some((true, Some(LinkParts::Html))),
        "TextOnly" => Some((true, Some(LinkParts::Text))),
        "HtmlAndText" => Some((true, Some(LinkParts::HtmlAndText))),
        _ => None,
    }
}

/// What the API role shares: the link keys, the machine detector and the
/// events' sink. Built once per process.
#[derive(Clone)]
pub struct Tracking {
    pub keys: token::LinkKeys,
    pub detector: Arc<machine::Detector>,
    pub sink: events::Sink,
    pub settings: Arc<TrackingSettings>,
}

impl Tracking {
    /// Builds it and starts the events' writer (needs a tokio runtime).
    pub fn start(settings: &Settings, pool: PgPool) -> anyhow::Result<Tracking> {
        let t = &settings.tracking;
        let detector = machine::Detector::new(t);
        let (sink, rx) = events::Sink::new(t.max_pending_events, t.max_pending_per_address);
        tokio::spawn(events::run(pool, detector.clone(), rx));
        Ok(Tracking {
            keys: token::LinkKeys::from_settings(settings)?,
            detector: Arc::new(detector),
            sink,
            settings: Arc::new(t.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_body_decides_over_the_tenant_default_which_defaults_off() {
        let none = json!({});
        assert_eq!(resolve(None, &none), 0);
        let on = json!({"tracking": {"opens": true, "clicks": true}});
        assert_eq!(resolve(None, &on), OPENS | HTML_LINKS);
        let off = TrackInput {
            opens: Some(false),
            ..Default::default()
        };
        assert_eq!(resolve(Some(off), &on), HTML_LINKS);
        let both = TrackInput {
            clicks: Some(true),
            links: Some(LinkParts::HtmlAndText),
            ..Default::default()
        };
        assert_eq!(resolve(Some(both), &none), HTML_LINKS | TEXT_LINKS);
        let no_clicks = TrackInput {
            clicks: Some(false),
            ..Default::default()
        };
        assert_eq!(resolve(Some(no_clicks), &on), OPENS);
        assert_eq!(
            postmark_links("TextOnly"),
            Some((true, Some(LinkParts::Text)))
        );
        assert_eq!(postmark_links("textonly"), None);
    }
}
