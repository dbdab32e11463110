//! The worker's side of tracking: which base URL a message's links use and
//! the [`Plan`] its bodies are rewritten with.
//!
//! The base is `https://track.<domain>` (the scheme of `tracking.public_url`,
//! else https) for the most specific of the tenant's domains for the From
//! domain whose `tracking` record (`track.<domain>` CNAME to
//! `tracking.domain`) checked ok, else `tracking.public_url`; cached per
//! (tenant, From domain) for `domains.cache_secs`.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use uuid::Uuid;

use super::rewrite::Plan;
use super::token::{Kind, Link, LinkKeys};
use super::{TrackingSettings, HTML_LINKS, OPENS, TEXT_LINKS};
use crate::config::Settings;
use crate::db::{self, PgPool};
use crate::domain::TenantId;
use crate::domains::sending::suffixes;
use crate::domains::signing::from_domain;
use crate::emails::model::EmailRow;

/// The label of a domain's tracking record.
pub const LABEL: &str = "track";

/// `track.<domain>`.
pub fn record_name(domain: &str) -> String {
    format!("{LABEL}.{domain}")
}

#[derive(Clone)]
pub struct Rewriter {
    keys: LinkKeys,
    settings: Arc<TrackingSettings>,
    /// `unsubscribe.public_url`: its `/u/` links are never rewritten.
    unsubscribe_url: String,
    pool: PgPool,
    by_sender: Cache<(Uuid, String), Option<Arc<str>>>,
}

impl Rewriter {
    /// `None` when the master key is unusable (nothing is rewritten).
    pub fn new(settings: &Settings, pool: PgPool) -> Option<Rewriter> {
        Some(Rewriter {
            keys: LinkKeys::from_settings(settings).ok()?,
            settings: Arc::new(settings.tracking.clone()),
            unsubscribe_url: settings
                .unsubscribe
                .public_url
                .trim()
                .trim_end_matches('/')
                .to_string(),
            pool,
            by_sender: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(settings.domains.cache_secs))
                .build(),
        })
    }

    fn scheme(&self) -> &str {
        match self.settings.public_url.trim() {
            u if u.to_ascii_lowercase().starts_with("http://") => "http",
            _ => "https",
        }
    }

    /// The base URL of the message's links; `None` when there is none.
    async fn base(&self, tenant: Uuid, from_addr: &str) -> Option<String> {
        let fallback = || {
            let u = self.settings.public_url.trim().trim_end_matches('/');
            (!u.is_empty()).then(|| u.to_string())
        };
        if self.settings.domain.is_empty() {
            return fallback();
        }
        let from = from_domain(from_addr)?;
        let pool = self.pool.clone();
        let names = suffixes(&from);
        let own = self
            .by_sender
            .try_get_with((tenant, from), async move {
                db::run(&pool, move |c| {
                    Ok(super::model::tracking_domain_for(
                        c,
                        TenantId(tenant),
                        &names,
                    )?)
                })
                .await
                .map(|n| n.map(Arc::from))
            })
            .await;
        match own {
            Ok(Some(domain)) => Some(format!("{}://{}", self.scheme(), record_name(&domain))),
            Ok(None) => fallback(),
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "tracking host lookup failed; using tracking.public_url");
                fallback()
            }
        }
    }

    /// How to rewrite `row`; `None` to leave it exactly as it is. Its links
    /// name no recipient yet: the worker sets [`Plan::link`]'s recipient for
    /// each copy it builds ([`Plan::for_recipient`]).
    pub async fn plan(&self, row: &EmailRow) -> Option<Plan> {
        if row.track == 0
            || row.raw_message.is_some()
            || row.html_body.is_none() && row.text_body.is_none()
        {
            return None;
        }
        let Some(base) = self.base(row.tenant_id, &row.from_addr).await else {
            tracing::warn!(email_id = %row.id, "tracking asked for but no tracking.public_url nor a checked tracking record: sent untracked");
            return None;
        };
        let mut untracked = unsubscribe_targets(&row.headers);
        untracked.push(format!("{base}/u/"));
        let public = self.settings.public_url.trim().trim_end_matches('/');
        for u in [public, self.unsubscribe_url.as_str()] {
            if !u.is_empty() {
                untracked.push(format!("{u}/u/"));
            }
        }
        Some(Plan {
            keys: self.keys.clone(),
            base,
            opens: row.track & OPENS != 0,
            html_links: row.track & HTML_LINKS != 0,
            text_links: row.track & TEXT_LINKS != 0,
            link: Link {
                kind: Kind::Open,
                tenant_id: row.tenant_id,
                email_id: row.id,
                recipient: None,
                url: None,
            },
            untracked,
            max_url_bytes: self.settings.max_url_bytes,
            max_copies_bytes: self.settings.max_copies_bytes,
        })
    }
}

/// The `http(s)` targets of the message's own `List-Unsubscribe` header.
fn unsubscribe_targets(headers: &serde_json::Value) -> Vec<String> {
    let Some(map) = headers.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("list-unsubscribe"))
        .filter_map(|(_, v)| v.as_str())
        .flat_map(|v| v.split(','))
        .map(|p| {
            p.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
        .filter(|u| super::token::is_web_url(u))
        .collect()
}

/// The row with its bodies rewritten by `plan` (an HTML body the rewriter
/// refuses is sent as it was, logged: tracking never costs a message).
pub fn apply(plan: Option<&Plan>, mut row: EmailRow) -> EmailRow {
    let Some(plan) = plan else {
        return row;
    };
    if let Some(html) = row.html_body.take() {
        row.html_body = Some(match plan.html(&html) {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(email_id = %row.id, error = %e, "HTML not rewritten for tracking");
                html
            }
        });
    }
    if plan.text_links {
        row.text_body = row.text_body.take().map(|t| plan.text(&t));
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_own_unsubscribe_targets_are_kept_apart() {
        let h = serde_json::json!({"List-Unsubscribe": "<mailto:u@x.example>, <https://x.example/unsub/1>"});
        assert_eq!(
            unsubscribe_targets(&h),
            vec!["https://x.example/unsub/1".to_string()]
        );
        assert!(unsubscribe_targets(&serde_json::json!({})).is_empty());
    }
}
