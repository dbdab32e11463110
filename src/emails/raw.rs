//! Sending a message that arrives whole (SMTP submission, issue 14): the
//! same path as `POST /v1/emails` — tenant, From-domain rule, size limit,
//! recipient limit, quota, then the ingestor (suppressions, usage,
//! `email.queued`) — with the message kept as sent instead of built from
//! fields. What is changed (RFC 6409 §8): a missing `Date` or
//! `Message-ID` is added, and `Bcc` header lines are removed (the envelope
//! carries Bcc; RFC 5322 §3.6.3). DKIM and `X-Postline-ID` are added at
//! delivery, as for API mail.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use lettre::message::Mailbox;
use mail_parser::MessageParser;
use uuid::Uuid;

use super::input::MAX_RECIPIENTS;
use super::model::NewEmail;
use super::service::{enqueue, sending_tenant, target};
use crate::auth::Principal;
use crate::domain::{parse_email, Permission, TenantId};
use crate::error::{AppError, AppResult, FieldError};
use crate::queue::ingest::Submission;
use crate::state::AppState;

/// The SMTP form of `scheduled_at`; not delivered to recipients.
pub const SCHEDULE_HEADER: &str = "X-Postline-Scheduled-At";

/// A whole RFC 5322 message and its envelope recipients.
#[derive(Debug)]
pub struct RawSubmission {
    /// RCPT TO addresses: every one is sent to, whether or not the headers
    /// name it (those the headers do not name are stored as `bcc`).
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
    /// `X-Postline-Scheduled-At`, already validated: the message is
    /// `scheduled` until then.
    pub scheduled_at: Option<DateTime<Utc>>,
}

fn too_large(size: usize, max: usize) -> AppError {
    AppError::Validation {
        code: "message_too_large",
        detail: format!(
            "The message is {size} bytes; the limit is {max} bytes (limits.max_message_bytes)."
        ),
        errors: vec![FieldError::new("message", format!("exceeds {max} bytes"))],
    }
}

/// Queues a whole message for the caller's tenant; its id.
pub async fn send_raw(state: &AppState, who: &Principal, sub: RawSubmission) -> AppResult<Uuid> {
    who.require(Permission::Send)?;
    let tenant = sending_tenant(state, who, target(who, None, None, "tenant_id")?).await?;
    let max = state.settings.limits.max_message_bytes;
    if sub.message.len() > max {
        return Err(too_large(sub.message.len(), max));
    }
    if sub.recipients.is_empty() || sub.recipients.len() > MAX_RECIPIENTS {
        return Err(AppError::invalid(
            "to",
            format!("1 to {MAX_RECIPIENTS} recipients"),
        ));
    }
    let scheduled_at = sub.scheduled_at;
    let parsed = parse(sub)?;
    state
        .domains
        .rule
        .check(TenantId(tenant.id), &parsed.from_domain, "from")
        .await?;
    let mut quotas = BTreeMap::new();
    if let Some(limit) = tenant.emails_per_day {
        quotas.insert(tenant.id, i64::from(limit));
    }
    let lifetime = ChronoDuration::seconds(
        i64::try_from(state.settings.delivery.max_lifetime_secs).unwrap_or(i64::MAX / 2),
    );
    // A scheduled message's lifetime starts when it may first be sent.
    let start = scheduled_at.unwrap_or_else(Utc::now);
    let row = parsed.into_row(tenant.id, start + lifetime, scheduled_at);
    let id = row.id;
    let reply = (
        actix_web::http::StatusCode::ACCEPTED,
        serde_json::Value::Null,
    );
    let submission = Submission {
        rows: vec![row],
        quotas,
    };
    enqueue(state, submission, reply, None).await?;
    Ok(id)
}

/// What the headers say, checked.
struct Parsed {
    id: Uuid,
    from: String,
    from_address: String,
    from_domain: String,
    to: Vec<String>,
    cc: Vec<String>,
    bcc: Vec<String>,
    reply_to: Vec<String>,
    subject: String,
    message_id: String,
    raw: Vec<u8>,
}

impl Parsed {
    fn into_row(
        self,
        tenant_id: Uuid,
        expires_at: DateTime<Utc>,
        scheduled_at: Option<DateTime<Utc>>,
    ) -> NewEmail {
        NewEmail {
            tenant_id,
            id: self.id,
            expires_at,
            message_id: self.message_id,
            from_addr: self.from,
            envelope_from: self.from_address,
            to_addrs: self.to,
            cc_addrs: self.cc,
            bcc_addrs: self.bcc,
            reply_to: self.reply_to,
            subject: self.subject,
            text_body: None,
            html_body: None,
            headers: serde_json::json!({}),
            attachments: serde_json::json!([]),
            tags: serde_json::json!({}),
            created_at: Utc::now(),
            raw_message: Some(self.raw),
            status: if scheduled_at.is_some() {
                "scheduled"
            } else {
                "queued"
            }
            .into(),
            scheduled_at,
        }
    }
}

/// The valid addresses of a header, lower-case (display and matching only:
/// anything that would not parse as an address is left out).
fn lower_list(a: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    a.map(|a| {
        a.iter()
            .filter_map(|x| x.address())
            .filter_map(|s| parse_email("address", s).ok())
            .map(|s| s.to_ascii_lowercase())
            .take(MAX_RECIPIENTS)
            .collect()
    })
    .unwrap_or_default()
}

/// Decoded header text for a column: no control characters (Postgres text
/// cannot hold NUL; CR/LF never belong in a header value).
fn plain_text(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn parse(sub: RawSubmission) -> AppResult<Parsed> {
    let mut recipients = Vec::with_capacity(sub.recipients.len());
    for (i, r) in sub.recipients.iter().enumerate() {
        recipients.push(parse_email(&format!("to[{i}]"), r)?);
    }
    let msg = MessageParser::default()
        .parse_headers(&sub.message)
        .ok_or_else(|| AppError::invalid("message", "is not an RFC 5322 message"))?;
    let no_from = || AppError::invalid("from", "the message needs a From header with one address");
    let from = msg.from().ok_or_else(no_from)?;
    if from.iter().count() != 1 {
        return Err(no_from());
    }
    let first = from.first().ok_or_else(no_from)?;
    let address = parse_email("from", first.address().unwrap_or_default())?;
    let mailbox = Mailbox::new(
        first
            .name()
            .map(|n| plain_text(n, 256))
            .filter(|n| !n.trim().is_empty()),
        address.parse().map_err(|_| no_from())?,
    );
    let from_domain = mailbox.email.domain().to_ascii_lowercase();
    let (to_h, cc_h) = (lower_list(msg.to()), lower_list(msg.cc()));
    let (mut to, mut cc, mut bcc) = (Vec::new(), Vec::new(), Vec::new());
    for r in recipients {
        let key = r.to_ascii_lowercase();
        if to_h.contains(&key) {
            to.push(r);
        } else if cc_h.contains(&key) {
            cc.push(r);
        } else {
            bcc.push(r);
        }
    }
    let reply_to = lower_list(msg.reply_to());
    let subject = plain_text(msg.subject().unwrap_or_default(), 998);
    let id = Uuid::new_v4();
    let existing_id = msg
        .message_id()
        .filter(|m| {
            !m.is_empty()
                && m.len() <= 250
                && m.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
        })
        .map(|m| format!("<{m}>"));
    let mut added = String::new();
    let message_id = match existing_id {
        Some(m) => m,
        None => {
            let m = format!("<{}@{}>", id.simple(), from_domain);
            added.push_str(&format!("Message-ID: {m}\r\n"));
            m
        }
    };
    if msg.date().is_none() {
        added.push_str(&format!("Date: {}\r\n", Utc::now().to_rfc2822()));
    }
    let has_bcc = msg.header_raw("Bcc").is_some();
    let has_schedule = msg.header_raw(SCHEDULE_HEADER).is_some();
    drop(msg);
    let mut raw = added.into_bytes();
    let mut kept = std::borrow::Cow::Borrowed(&sub.message[..]);
    if has_bcc {
        kept = without_header(&kept, b"bcc").into();
    }
    if has_schedule {
        kept = without_header(&kept, SCHEDULE_HEADER.as_bytes()).into();
    }
    raw.extend_from_slice(&kept);
    Ok(Parsed {
        id,
        from: mailbox.to_string(),
        from_address: mailbox.email.to_string(),
        from_domain,
        to,
        cc,
        bcc,
        reply_to,
        subject,
        message_id,
        raw,
    })
}

/// `message` without the header field `name` (lower-case), folded
/// continuation lines included; the body is untouched.
pub fn without_header(message: &[u8], name: &[u8]) -> Vec<u8> {
    let end = find(message, b"\r\n\r\n").map_or(message.len(), |i| i + 2);
    let (head, body) = message.split_at(end);
    let mut out = Vec::with_capacity(message.len());
    let mut dropping = false;
    for line in head.split_inclusive(|b| *b == b'\n') {
        let folded = matches!(line.first(), Some(b' ' | b'\t'));
        if !folded {
            dropping = line.len() > name.len()
                && line[..name.len()].eq_ignore_ascii_case(name)
                && line[name.len()..].trim_ascii_start().first() == Some(&b':');
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(body);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_header_text_is_made_storable() {
        let m = b"From: =?utf-8?q?Ev=00il=0D=0A?= <a@x.com>\r\nTo: b@y.com\r\nSubject: =?utf-8?q?s=00=0Dx?=\r\nMessage-ID: <a\x01b@x>\r\n\r\nhi\r\n";
        let p = parse(RawSubmission {
            recipients: vec!["b@y.com".into()],
            message: m.to_vec(),
            scheduled_at: None,
        })
        .expect("parses");
        assert!(!p.from.contains(['\0', '\r', '\n']), "{:?}", p.from);
        assert_eq!(p.subject, "sx");
        // An unusable Message-ID is replaced (and the new one prepended).
        assert!(p.message_id.ends_with("@x.com>"), "{}", p.message_id);
        assert!(p.raw.starts_with(b"Message-ID: <"));
        assert_eq!(p.to, vec!["b@y.com".to_string()]);
    }

    #[test]
    fn bcc_lines_are_removed_with_their_folds() {
        let m = b"From: a@x.com\r\nBcc: s@y.com,\r\n  t@y.com\r\nBccx: keep\r\nTo: b@x.com\r\n\r\nBcc: body stays\r\n";
        let out = without_header(m, b"bcc");
        assert_eq!(
            out,
            b"From: a@x.com\r\nBccx: keep\r\nTo: b@x.com\r\n\r\nBcc: body stays\r\n".to_vec()
        );
    }
}
