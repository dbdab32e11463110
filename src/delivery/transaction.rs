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
//!
//! Where the server offers PIPELINING (RFC 2920) MAIL, every RCPT and DATA
//! go in one write and their replies are read in order, so a transaction
//! costs two round trips (commands, content) instead of three plus one per
//! recipient.

use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};

use super::session::{response_text, step, Failure, Parsed};
use super::{Fate, Outcome, RcptResult, SmtpOptions};

/// Replies to MAIL that mean "authenticate first / better" (RFC 4954): the
/// relay's configuration is wrong, not the message, so they defer (an admin
/// can fix the credentials) even though they are 5xx.
const RELAY_AUTH_CODES: [u16; 4] = [530, 534, 535, 538];

/// What one try did, and whether the connection can take the next message.
pub(super) struct Attempt {
    pub outcome: Outcome,
    pub reusable: bool,
    /// Failed at MAIL on a connection the server had already dropped:
    /// nothing was accepted, a fresh connection may retry at once.
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

    fn done(outcome: Outcome) -> Self {
        Attempt {
            outcome,
            reusable: true,
            stale: false,
        }
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

/// MAIL parameters the message needs, or the outcome when the server lacks
/// the extension.
fn mail_params(
    conn: &AsyncSmtpConnection,
    env: &Parsed,
    raw: &[u8],
) -> Result<Vec<MailParameter>, Outcome> {
    let info = conn.server_info();
    let mut params = Vec::new();
    if env.utf8 {
        if !info.supports_feature(Extension::SmtpUtfEight) {
            return Err(Outcome::bounced(
                "relay lacks SMTPUTF8 for non-ASCII addresses",
            ));
        }
        params.push(MailParameter::SmtpUtfEight);
    }
    if !raw.is_ascii() || !env.headers.is_ascii() {
        if !info.supports_feature(Extension::EightBitMime) {
            return Err(Outcome::bounced(
                "relay lacks 8BITMIME for an 8-bit message",
            ));
        }
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    Ok(params)
}

/// The reply to the next command: sent now and awaited, or (pipelined)
/// already sent with the batch and only read.
async fn next_reply(
    conn: &mut AsyncSmtpConnection,
    pipelined: bool,
    opts: &SmtpOptions,
    what: &str,
    command: impl std::fmt::Display,
) -> Result<(), Failure> {
    let limit = opts.command_timeout;
    let reply = if pipelined {
        step(limit, what, conn.read_response()).await
    } else {
        step(limit, what, conn.command(command)).await
    };
    reply.map(|_| ())
}

/// One transaction for `env`: MAIL, RCPT per recipient, DATA, then the
/// envelope's header lines followed by its own content if it has one, else
/// the shared content.
pub(super) async fn transact(
    conn: &mut AsyncSmtpConnection,
    pipelining: bool,
    env: &Parsed,
    raw: &[u8],
    opts: &SmtpOptions,
) -> Attempt {
    let raw = env.content.as_deref().unwrap_or(raw);
    let params = match mail_params(conn, env, raw) {
        Ok(p) => p,
        Err(outcome) => return Attempt::done(outcome),
    };
    let mail = Mail::new(env.from.clone(), params);
    let rcpts = || env.to.iter().map(|(_, a)| Rcpt::new(a.clone(), vec![]));
    let first = if pipelining {
        let mut batch = mail.to_string();
        rcpts().for_each(|r| batch.push_str(&r.to_string()));
        batch.push_str(&Data.to_string());
        step(opts.command_timeout, "MAIL", conn.command(batch)).await
    } else {
        step(opts.command_timeout, "MAIL", conn.command(mail)).await
    };
    let refusal = match first {
        Ok(_) => None,
        Err(Failure::Reply(r)) if r.code == 421 => return Attempt::broken(r.outcome(""), true),
        Err(Failure::Reply(r)) if RELAY_AUTH_CODES.contains(&r.code) => {
            Some(Outcome::deferred(format!("MAIL refused: {}", r.text)))
        }
        Err(Failure::Reply(r)) => Some(r.outcome("")),
        Err(Failure::Broken(why)) => return Attempt::broken(Outcome::deferred(why), true),
    };
    if let Some(outcome) = refusal {
        if pipelining {
            // The RCPTs and DATA already sent answer too (503, most likely).
            for what in std::iter::repeat_n("RCPT", env.to.len()).chain(["DATA"]) {
                match step(opts.command_timeout, what, conn.read_response()).await {
                    Err(Failure::Reply(_)) => {}
                    // A DATA accepted without a sender, or a lost reply: the
                    // session is out of step; this one is closed.
                    Ok(_) | Err(Failure::Broken(_)) => return Attempt::broken(outcome, false),
                }
            }
        }
        return reset(conn, opts, outcome).await;
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
    for ((given, _), rcpt) in env.to.iter().zip(rcpts()) {
        match next_reply(conn, pipelining, opts, "RCPT", rcpt).await {
            Ok(()) => accepted.push(given),
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
        if !pipelining {
            return reset(conn, opts, outcome).await;
        }
        return match step(opts.command_timeout, "DATA", conn.read_response()).await {
            Err(Failure::Reply(_)) => reset(conn, opts, outcome).await,
            // DATA accepted with no recipient (RFC 2920 §3.1 would have us
            // send an empty message): closed instead, nothing is sent.
            Ok(_) | Err(Failure::Broken(_)) => Attempt::broken(outcome, false),
        };
    }

    match next_reply(conn, pipelining, opts, "DATA", Data).await {
        Ok(()) => {}
        Err(Failure::Reply(r)) if r.code == 421 => return Attempt::broken(r.outcome(""), false),
        Err(Failure::Reply(r)) => {
            let outcome = combine(r.text.clone(), &accepted, r.fate(), refused);
            return reset(conn, opts, outcome).await;
        }
        Err(Failure::Broken(why)) => return Attempt::broken(Outcome::deferred(why), false),
    }
    // From here a broken session may still have delivered (reply lost): the
    // deferral then sends again, which DESIGN §5 accepts (at-least-once).
    // lettre appends CRLF.CRLF; without this the relay would see one more,
    // empty, line than the message has.
    let body = raw.strip_suffix(b"\r\n").unwrap_or(raw);
    let content = [env.headers.as_bytes(), body].into_iter();
    match step(opts.data_timeout, "end of data", conn.message_iter(content)).await {
        Ok(reply) => Attempt::done(combine(
            response_text(&reply),
            &accepted,
            Fate::Delivered,
            refused,
        )),
        Err(Failure::Reply(r)) => Attempt {
            outcome: combine(r.text.clone(), &accepted, r.fate(), refused),
            reusable: r.code != 421,
            stale: false,
        },
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
