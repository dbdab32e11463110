//! rspamd's `/checkv2` (its HTTP protocol): the message posted as it
//! arrived, the envelope in headers, the score and action read back. A
//! bounded timeout; any failure is `None` (logged), never a refusal.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Spam {
    pub score: f64,
    /// rspamd's action: `no action`, `greylist`, `add header`,
    /// `rewrite subject`, `soft reject` or `reject`.
    pub action: String,
}

#[derive(Deserialize)]
struct Reply {
    score: f64,
    action: String,
}

#[derive(Clone)]
pub struct Rspamd {
    url: String,
    client: reqwest::Client,
}

/// The envelope rspamd is told about.
pub struct Meta<'a> {
    pub ip: Option<IpAddr>,
    pub helo: &'a str,
    pub from: &'a str,
    pub rcpt: &'a [String],
}

impl Rspamd {
    /// `None` when no URL is configured.
    pub fn new(base_url: &str, timeout: Duration) -> Option<Rspamd> {
        if base_url.is_empty() {
            return None;
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .ok()?;
        Some(Rspamd {
            url: format!("{}/checkv2", base_url.trim_end_matches('/')),
            client,
        })
    }

    /// The score of a message (`bytes::Bytes`: shared, not copied).
    pub async fn check(&self, message: bytes::Bytes, meta: Meta<'_>) -> Option<Spam> {
        let mut req = self.client.post(&self.url).body(message);
        if let Some(ip) = meta.ip {
            req = req.header("IP", ip.to_string());
        }
        if !meta.helo.is_empty() {
            req = req.header("Helo", meta.helo);
        }
        if !meta.from.is_empty() {
            req = req.header("From", meta.from);
        }
        for r in meta.rcpt {
            req = req.header("Rcpt", r.as_str());
        }
        let resp = match req.send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                tracing::warn!(
                    status = r.status().as_u16(),
                    "rspamd answered an error; spam null"
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "rspamd unreachable; spam null");
                return None;
            }
        };
        let body = resp.bytes().await.ok()?;
        match serde_json::from_slice::<Reply>(&body) {
            Ok(r) => Some(Spam {
                score: r.score,
                action: r.action,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "rspamd reply unreadable; spam null");
                None
            }
        }
    }
}
