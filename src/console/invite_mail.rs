//! Invitations by mail: when the default relay is configured
//! (`delivery.mode = "smtp"`), the one-time link is also mailed to the
//! invitee through that relay. The link is still shown to whoever invited;
//! a mail that fails loses nothing. Neither the link nor its token is ever
//! logged: only whether the mail went out.

use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::Message;
use uuid::Uuid;

use crate::config::{DeliveryMode, Settings};
use crate::delivery::{OutgoingMessage, RelayConfig, SmtpOptions, SmtpTransport, Transport};
use crate::domain::TenantId;

/// What became of the mail of an invitation, for the page.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum Mailed {
    /// The relay accepted it.
    Sent,
    /// Not attempted, and why (no relay, no sender, no public URL).
    Off(&'static str),
    /// Attempted and refused or unreachable: the link must be passed on by hand.
    Failed,
}

/// The sender of invitation mail: `console.mail_from`, else
/// `postline@<bounces.domain>`; `None` when neither is set.
pub fn sender(s: &Settings) -> Option<String> {
    let from = s.console.mail_from.trim();
    if !from.is_empty() {
        return Some(from.to_string());
    }
    let domain = s.bounces.domain.trim();
    (!domain.is_empty()).then(|| format!("postline@{domain}"))
}

/// Why invitations are not mailed with these settings, or `None` if they are.
fn off_reason(s: &Settings) -> Option<&'static str> {
    if s.delivery.mode != DeliveryMode::Smtp {
        Some("no relay is configured (delivery.mode is not \"smtp\")")
    } else if s.console.public_url.trim().is_empty() {
        Some("console.public_url is not set, so the link has no address to mail")
    } else if sender(s).is_none() {
        Some("neither console.mail_from nor bounces.domain is set")
    } else {
        None
    }
}

/// The invitation as an RFC 5322 message (CRLF line endings).
fn compose(from: &str, to: &str, link: &str, ttl_secs: u64) -> Option<Vec<u8>> {
    let from: Mailbox = format!("Postline <{from}>").parse().ok()?;
    let to: Mailbox = to.parse().ok()?;
    let hours = ttl_secs.div_ceil(3600);
    let text = format!(
        "You have been added to a Postline console.\r\n\r\n\
         Set your password with this one-time link (valid for {hours} h):\r\n\r\n\
         {link}\r\n\r\n\
         If you did not expect this, ignore this message.\r\n"
    );
    // 7bit when it can be (ASCII, lines under RFC 5322's 998): the link stays
    // one unbroken line. lettre would pick quoted-printable past 76
    // characters, which breaks the link with soft line breaks.
    let body = if text.is_ascii() && text.split("\r\n").all(|l| l.len() < 998) {
        Body::dangerous_pre_encoded(text.into_bytes(), ContentTransferEncoding::SevenBit)
    } else {
        Body::new(text)
    };
    let msg = Message::builder()
        .from(from)
        .to(to)
        .subject("Your Postline console invitation")
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .ok()?;
    Some(msg.formatted())
}

/// Mails `link` to `to` through the default relay, with the delivery
/// timeouts (so a page waits at most about connect + a few command
/// timeouts). `tenant` only labels the transport's log lines.
pub async fn send(s: &Settings, tenant: TenantId, to: &str, link: &str) -> Mailed {
    if let Some(why) = off_reason(s) {
        return Mailed::Off(why);
    }
    let from = sender(s).unwrap_or_default();
    let Some(raw) = compose(&from, to, link, s.console.invitation_ttl_secs) else {
        tracing::warn!("console invitation mail could not be composed");
        return Mailed::Failed;
    };
    let d = &s.delivery;
    let options = SmtpOptions {
        connect_timeout: Duration::from_secs(d.connect_timeout_secs.max(1)),
        command_timeout: Duration::from_secs(d.command_timeout_secs.max(1)),
        data_timeout: Duration::from_secs(d.command_timeout_secs.max(1)),
        max_connections: 1,
        allow_plaintext_auth: d.allow_plaintext_auth,
        ..SmtpOptions::default()
    };
    let transport = SmtpTransport::new(RelayConfig::from_settings(&d.smtp), options);
    let msg = OutgoingMessage::new(tenant, Uuid::new_v4(), from, vec![to.to_string()], raw);
    let outcome = transport.send(&msg).await;
    if outcome.is_delivered() {
        tracing::info!(tenant = %tenant, "console invitation mailed");
        Mailed::Sent
    } else {
        // The relay's reply names no link (it answers the envelope and the
        // end of data, not the body).
        tracing::warn!(tenant = %tenant, response = %outcome.response(), "console invitation mail failed");
        Mailed::Failed
    }
}
