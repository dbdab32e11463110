//! What the transports share about a session with an SMTP server: the
//! parsed envelope of a transaction ([`Parsed`]), the PIPELINING probe,
//! replies and how a failure is told from a refusal ([`Failure`]), time
//! limits, and when AUTH may be sent.

use std::error::Error as _;
use std::future::Future;
use std::time::Duration;

use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::Ehlo;
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::transport::smtp::Error as SmtpError;
use lettre::Address;
use tokio::time::timeout;

use super::smtp::SessionError;
use super::{Envelope, Fate, Outcome, RelayConfig};
use crate::config::TlsMode;

/// One transaction's envelope, parsed; addresses that do not parse never
/// reach the server.
pub(super) struct Parsed {
    pub from: Option<Address>,
    /// (as given, parsed)
    pub to: Vec<(String, Address)>,
    pub invalid: Vec<String>,
    pub utf8: bool,
    /// Every recipient as given, for outcomes shared by all.
    pub all: Vec<String>,
    /// Header lines sent before the shared content in this transaction.
    pub headers: String,
    /// The transaction's own content, in place of the shared one.
    pub content: Option<std::sync::Arc<[u8]>>,
}

impl Parsed {
    /// Bounced when nothing could ever be sent: a bad sender or no valid
    /// recipient.
    pub(super) fn parse(env: &Envelope) -> Result<Self, Outcome> {
        let from = if env.from.is_empty() {
            None
        } else {
            let parsed = env.from.parse::<Address>();
            Some(parsed.map_err(|_| Outcome::bounced("invalid envelope sender (not sent)"))?)
        };
        let mut to = Vec::with_capacity(env.recipients.len());
        let mut invalid = Vec::new();
        for rcpt in &env.recipients {
            match rcpt.parse::<Address>() {
                Ok(addr) => to.push((rcpt.clone(), addr)),
                Err(_) => invalid.push(rcpt.clone()),
            }
        }
        if to.is_empty() {
            return Err(Outcome::bounced("no valid recipient (not sent)"));
        }
        let utf8 = !env.from.is_ascii() || to.iter().any(|(a, _)| !a.is_ascii());
        Ok(Parsed {
            from,
            to,
            invalid,
            utf8,
            all: env.recipients.clone(),
            headers: env.headers.clone(),
            content: env.content.clone(),
        })
    }
}

/// Whether the server's EHLO reply offers PIPELINING (RFC 2920). lettre
/// keeps only the extensions it uses, so the session asks again: one more
/// round trip per connection, paid back by the first pipelined
/// transaction. A failed EHLO means no (a broken connection shows at the
/// next command).
pub(super) async fn offers_pipelining(
    conn: &mut AsyncSmtpConnection,
    hello: &ClientId,
    limit: Duration,
) -> bool {
    match step(limit, "EHLO", conn.command(Ehlo::new(hello.clone()))).await {
        Ok(reply) => reply
            .message()
            .skip(1)
            .any(|l| l.trim().eq_ignore_ascii_case("PIPELINING")),
        Err(_) => false,
    }
}

/// A negative reply, e.g. `451 4.3.0 try later`.
pub(super) struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    /// A refused RCPT: 552 there is temporary (RFC 5321 §4.5.3.1.10).
    pub fn rcpt_fate(&self) -> Fate {
        if self.code >= 500 && self.code != 552 {
            Fate::Bounced
        } else {
            Fate::Deferred
        }
    }

    /// A refused DATA or end of data.
    pub fn fate(&self) -> Fate {
        if self.code >= 500 {
            Fate::Bounced
        } else {
            Fate::Deferred
        }
    }

    pub fn outcome(&self, context: &str) -> Outcome {
        let response = format!("{}{context}", self.text);
        if self.code >= 500 {
            Outcome::bounced(response)
        } else {
            Outcome::deferred(response)
        }
    }
}

pub(super) enum Failure {
    /// The relay answered with a 4xx/5xx reply; the session is still in sync.
    Reply(Reply),
    /// Network error, timeout or garbled reply: the session is unusable.
    Broken(String),
}

fn classify(err: SmtpError) -> Failure {
    match err.status() {
        Some(code) => {
            let text = err.source().map(|s| s.to_string()).unwrap_or_default();
            Failure::Reply(Reply {
                code: u16::from(code),
                text: format!("{code} {text}").trim_end().to_string(),
            })
        }
        None => Failure::Broken(err.to_string()),
    }
}

pub(super) fn response_text(r: &Response) -> String {
    let lines: Vec<&str> = r.message().collect();
    format!("{} {}", r.code(), lines.join(" "))
        .trim_end()
        .to_string()
}

pub(super) async fn step(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<Response, SmtpError>>,
) -> Result<Response, Failure> {
    match timeout(limit, fut).await {
        Ok(result) => result.map_err(classify),
        Err(_) => Err(Failure::Broken(format!(
            "timed out after {limit:?} waiting for the reply to {what}"
        ))),
    }
}

/// Session setup (greeting, EHLO, STARTTLS, AUTH) with a time limit. Any
/// failure, 5xx included, is the relay's or its configuration's, not the
/// message's, so the caller defers rather than bounces.
pub(super) async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, SmtpError>>,
) -> Result<T, String> {
    match timeout(limit, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(match classify(err) {
            Failure::Reply(r) => format!("{what} refused: {}", r.text),
            Failure::Broken(why) => format!("{what} failed: {why}"),
        }),
        Err(_) => Err(format!("{what} timed out after {limit:?}")),
    }
}

/// Whether the password may be sent on this session (finding 7): only over
/// TLS (`tls` or a completed `starttls`; the caller has already failed the
/// session when STARTTLS did not succeed), to a relay configured as a
/// loopback IP literal (`127.0.0.1`, `::1`: the bytes never leave the
/// host), or with `delivery.allow_plaintext_auth`. A host *name* such as
/// `localhost` does not count: what it resolves to is not the config's to
/// promise. Refused → the message is deferred and the password never sent.
pub(super) fn check_auth_allowed(
    relay: &RelayConfig,
    allow_plaintext: bool,
) -> Result<(), SessionError> {
    let encrypted = relay.tls != TlsMode::None;
    let loopback_literal = relay
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    if encrypted || loopback_literal || allow_plaintext {
        Ok(())
    } else {
        Err(SessionError::same(
            "SMTP AUTH not attempted: the relay connection is not encrypted \
             (set its tls to starttls or tls, or delivery.allow_plaintext_auth)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(host: &str, tls: TlsMode) -> RelayConfig {
        RelayConfig {
            host: host.into(),
            port: 25,
            tls,
            username: Some("u".into()),
            password: None,
        }
    }

    #[test]
    fn plaintext_auth_only_to_loopback_literals_or_when_allowed() {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "[::1]"] {
            assert!(
                check_auth_allowed(&relay(host, TlsMode::None), false).is_ok(),
                "{host}"
            );
        }
        for host in ["localhost", "relay.example", "10.0.0.1", "0.0.0.0"] {
            assert!(
                check_auth_allowed(&relay(host, TlsMode::None), false).is_err(),
                "{host}"
            );
            assert!(
                check_auth_allowed(&relay(host, TlsMode::None), true).is_ok(),
                "{host}"
            );
            assert!(check_auth_allowed(&relay(host, TlsMode::Starttls), false).is_ok());
            assert!(check_auth_allowed(&relay(host, TlsMode::Tls), false).is_ok());
        }
    }
}
