//! One SMTP mail transaction on an open connection, and how its replies map
//! to an [`Outcome`].
//!
//! We drive MAIL/RCPT/DATA ourselves instead of lettre's `send`, which
//! aborts the whole connection on the first refused RCPT. Per recipient
//! (issue 13): the accepted ones get the message and the DATA reply; each
//! refused one gets its own reply: 4xx (and 552, which RFC 5321
//! §4.5.3.1.10 says to treat as temporary on RCPT) defers it alone, so the
//! retry sends only to it; 5xx bounces it alone. When every recipient fared
//! the same the outcome is that one ([`Outcome::Delivered`], …); otherwise
//! [`Outcome::PerRecipient`].

use std::error::Error as _;
use std::future::Future;
use std::time::Duration;

use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use lettre::transport::smtp::Error as SmtpError;
use lettre::Address;
use tokio::time::timeout;

use super::smtp::SessionError;
use super::{Fate, Outcome, OutgoingMessage, RcptResult, RelayConfig, SmtpOptions};
use crate::config::TlsMode;

/// The parsed envelope; addresses that do not parse never reach the relay.
pub(super) struct Envelope {
    from: Option<Address>,
    /// (as given, parsed)
    to: Vec<(String, Address)>,
    invalid: Vec<String>,
    utf8: bool,
}

impl Envelope {
    /// Bounced when nothing could ever be sent: a bad sender or no valid
    /// recipient.
    pub(super) fn parse(msg: &OutgoingMessage) -> Result<Self, Outcome> {
        let from = if msg.envelope_from.is_empty() {
            None
        } else {
            let parsed = msg.envelope_from.parse::<Address>();
            Some(parsed.map_err(|_| Outcome::bounced("invalid envelope sender (not sent)"))?)
        };
        let mut to = Vec::with_capacity(msg.recipients.len());
        let mut invalid = Vec::new();
        for rcpt in &msg.recipients {
            match rcpt.parse::<Address>() {
                Ok(addr) => to.push((rcpt.clone(), addr)),
                Err(_) => invalid.push(rcpt.clone()),
            }
        }
        if to.is_empty() {
            return Err(Outcome::bounced("no valid recipient (not sent)"));
        }
        let utf8 = !msg.envelope_from.is_ascii() || to.iter().any(|(a, _)| !a.is_ascii());
        Ok(Envelope {
            from,
            to,
            invalid,
            utf8,
        })
    }
}

/// Replies to MAIL that mean "authenticate first / better" (RFC 4954): the
/// relay's configuration is wrong, not the message, so they defer (an admin
/// can fix the credentials) even though they are 5xx.
const RELAY_AUTH_CODES: [u16; 4] = [530, 534, 535, 538];

/// What one try did, and whether the connection can take the next message.
pub(super) struct Attempt {
    pub outcome: Outcome,
    pub reusable: bool,
    /// Failed at MAIL on a connection the relay had already dropped: nothing
    /// was accepted, a fresh connection may retry at once.
    pub stale: bool,
}

impl Attempt {
    fn broken(outcome: Outcome, stale: bool) -> Self {
        Attempt {
            outcome,
            reusable: false,
            stale,
        }
    }
}

/// A negative reply, e.g. `451 4.3.0 try later`.
struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    /// A refused RCPT: 552 there is temporary (RFC 5321 §4.5.3.1.10).
    fn rcpt_fate(&self) -> Fate {
        if self.code >= 500 && self.code != 552 {
            Fate::Bounced
        } else {
            Fate::Deferred
        }
    }

    fn outcome(&self, context: &str) -> Outcome {
        let response = format!("{}{context}", self.text);
        if self.code >= 500 {
            Outcome::bounced(response)
        } else {
            Outcome::deferred(response)
        }
    }
}

enum Failure {
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

fn response_text(r: &Response) -> String {
    let lines: Vec<&str> = r.message().collect();
    format!("{} {}", r.code(), lines.join(" "))
        .trim_end()
        .to_string()
}

async fn step(
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

/// Ends a refused transaction so the connection can be reused.
async fn reset(conn: &mut AsyncSmtpConnection, opts: &SmtpOptions, outcome: Outcome) -> Attempt {
    let reusable = step(opts.command_timeout, "RSET", conn.command(Rset))
        .await
        .is_ok();
    Attempt {
        outcome,
        reusable,
        stale: false,
    }
}

pub(super) async fn transact(
    conn: &mut AsyncSmtpConnection,
    env: &Envelope,
    raw: &[u8],
    opts: &SmtpOptions,
) -> Attempt {
    let cmd = opts.command_timeout;
    let info = conn.server_info();
    let mut params = Vec::new();
    if env.utf8 {
        if !info.supports_feature(Extension::SmtpUtfEight) {
            return Attempt {
                outcome: Outcome::bounced("relay lacks SMTPUTF8 for non-ASCII addresses"),
                reusable: true,
                stale: false,
            };
        }
        params.push(MailParameter::SmtpUtfEight);
    }
    if !raw.is_ascii() {
        if !info.supports_feature(Extension::EightBitMime) {
            return Attempt {
                outcome: Outcome::bounced("relay lacks 8BITMIME for an 8-bit message"),
                reusable: true,
                stale: false,
            };
        }
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }

    match step(
        cmd,
        "MAIL",
        conn.command(Mail::new(env.from.clone(), params)),
    )
    .await
    {
        Ok(_) => {}
        Err(Failure::Reply(r)) if r.code == 421 => {
            return Attempt::broken(r.outcome(""), true);
        }
        Err(Failure::Reply(r)) if RELAY_AUTH_CODES.contains(&r.code) => {
            let outcome = Outcome::deferred(format!("MAIL refused: {}", r.text));
            return reset(conn, opts, outcome).await;
        }
        Err(Failure::Reply(r)) => return reset(conn, opts, r.outcome("")).await,
        Err(Failure::Broken(why)) => return Attempt::broken(Outcome::deferred(why), true),
    }

    let mut accepted: Vec<&str> = Vec::new();
    let mut refused: Vec<RcptResult> = env
        .invalid
        .iter()
        .map(|r| RcptResult {
            recipient: r.clone(),
            fate: Fate::Bounced,
            response: "invalid address (not sent)".into(),
        })
        .collect();
    for (given, rcpt) in &env.to {
        match step(cmd, "RCPT", conn.command(Rcpt::new(rcpt.clone(), vec![]))).await {
            Ok(_) => accepted.push(given),
            Err(Failure::Reply(r)) if r.code == 421 => {
                return Attempt::broken(r.outcome(""), false);
            }
            Err(Failure::Reply(r)) => refused.push(RcptResult {
                recipient: given.clone(),
                fate: r.rcpt_fate(),
                response: r.text,
            }),
            Err(Failure::Broken(why)) => return Attempt::broken(Outcome::deferred(why), false),
        }
    }
    if accepted.is_empty() {
        let first = refused
            .iter()
            .find(|r| r.fate == Fate::Deferred)
            .or(refused.first())
            .map(|r| r.response.clone())
            .unwrap_or_else(|| "no recipient accepted".into());
        let outcome = combine(first, &[], Fate::Bounced, refused);
        return reset(conn, opts, outcome).await;
    }

    match step(cmd, "DATA", conn.command(Data)).await {
        Ok(_) => {}
        Err(Failure::Reply(r)) if r.code == 421 => return Attempt::broken(r.outcome(""), false),
        Err(Failure::Reply(r)) => {
            let fate = if r.code >= 500 {
                Fate::Bounced
            } else {
                Fate::Deferred
            };
            let outcome = combine(r.text.clone(), &accepted, fate, refused);
            return reset(conn, opts, outcome).await;
        }
        Err(Failure::Broken(why)) => return Attempt::broken(Outcome::deferred(why), false),
    }
    // From here a broken session may still have delivered (reply lost): the
    // deferral then sends again, which DESIGN §5 accepts (at-least-once).
    // lettre appends CRLF.CRLF; without this the relay would see one more,
    // empty, line than the message has.
    let body = raw.strip_suffix(b"\r\n").unwrap_or(raw);
    match step(opts.data_timeout, "end of data", conn.message(body)).await {
        Ok(reply) => Attempt {
            outcome: combine(response_text(&reply), &accepted, Fate::Delivered, refused),
            reusable: true,
            stale: false,
        },
        Err(Failure::Reply(r)) => {
            let fate = if r.code >= 500 {
                Fate::Bounced
            } else {
                Fate::Deferred
            };
            Attempt {
                outcome: combine(r.text.clone(), &accepted, fate, refused),
                reusable: r.code != 421,
                stale: false,
            }
        }
        Err(Failure::Broken(why)) => {
            let outcome = combine(why, &accepted, Fate::Deferred, refused);
            Attempt::broken(outcome, false)
        }
    }
}

/// The outcome of a transaction: `accepted` recipients share `fate` and
/// `response`; `refused` have their own. One plain outcome when all agree.
fn combine(response: String, accepted: &[&str], fate: Fate, refused: Vec<RcptResult>) -> Outcome {
    let uniform = match refused.first() {
        None => Some((fate, response.clone())),
        Some(first) if accepted.is_empty() => refused
            .iter()
            .all(|r| r.fate == first.fate && r.response == first.response)
            .then(|| (first.fate, first.response.clone())),
        Some(_) => None,
    };
    if let Some((fate, response)) = uniform {
        return match fate {
            Fate::Delivered => Outcome::Delivered { response },
            Fate::Deferred => Outcome::Deferred { response },
            Fate::Bounced => Outcome::Bounced { response },
        };
    }
    let mut recipients: Vec<RcptResult> = accepted
        .iter()
        .map(|r| RcptResult {
            recipient: r.to_string(),
            fate,
            response: response.clone(),
        })
        .collect();
    recipients.extend(refused);
    Outcome::PerRecipient {
        response,
        recipients,
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
