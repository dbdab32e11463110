//! One signed POST to an endpoint. The HTTP client resolves names through the
//! SSRF guard (so only allowed addresses are ever connected to), follows no
//! redirects, uses no proxy, and gives up after `webhooks.timeout_secs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::input::parse_url;
use super::signing;
use crate::config::WebhookSettings;
use crate::net_guard::{Guard, GuardedResolver};

/// What one POST came to.
#[derive(Clone, Debug)]
pub struct Response {
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration: Duration,
}

impl Response {
    pub fn is_success(&self) -> bool {
        self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    guard: Guard,
}

impl Sender {
    pub fn new(settings: &WebhookSettings) -> anyhow::Result<Sender> {
        let guard = Guard::new(settings.allow_private_targets);
        let timeout = Duration::from_secs(settings.timeout_secs);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver(guard)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("Postline-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("webhook HTTP client: {e}"))?;
        Ok(Sender { client, guard })
    }

    /// POSTs `body` to `url`, signed with `key` under the stable `msg_id`.
    /// Never fails: every problem is a [`Response`] with an error text (which
    /// carries neither the URL nor the secret).
    pub async fn post(&self, url: &str, msg_id: &str, key: &[u8], body: Vec<u8>) -> Response {
        let started = Instant::now();
        let failed = |error: String| Response {
            status_code: None,
            error: Some(error),
            duration: started.elapsed(),
        };
        // IP literals skip DNS, so the URL's own host is checked here too
        // (the config may have changed since the endpoint was saved).
        let url = match parse_url(url, self.guard) {
            Ok(url) => url,
            Err(why) => return failed(format!("refused by the SSRF guard: the URL {why}")),
        };
        let timestamp = Utc::now().timestamp();
        let signature = signing::sign(key, msg_id, timestamp, &body);
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => {
                let code = resp.status().as_u16();
                Response {
                    status_code: Some(code),
                    error: (!(200..300).contains(&code)).then(|| format!("HTTP {code}")),
                    duration: started.elapsed(),
                }
            }
            Err(e) => failed(describe(e)),
        };
        let outcome = match resp.status_code {
            Some(c) if (200..300).contains(&c) => "success",
            Some(410) => "gone",
            Some(_) => "http_error",
            None if resp
                .error
                .as_deref()
                .is_some_and(|e| e.contains("SSRF guard")) =>
            {
                "refused"
            }
            None => "error",
        };
        crate::metrics::webhook_request(outcome, resp.duration);
        resp
    }
}

/// The error and its causes, without the URL (it may hold a token).
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}
