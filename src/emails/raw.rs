//! Sending a message that arrives whole (SMTP submission, issue 14): the
//! same path as `POST /v1/emails` — tenant, From-domain rule, size limit,
//! recipient limit, quota, then the ingestor (suppressions, usage,
//! `email.queued`) — with the message kept as sent instead of built from
//! fields. Its header set is checked first (`header_set`: one `From`, the
//! once-only fields once), and every address a reader may show as the
//! author or sender (`From`, `Sender`, `Resent-From`, `Resent-Sender`) is
//! held to the From-domain rule. What is changed (RFC 6409 §8): a missing
//! `Date` or `Message-ID` is added, and `Bcc` header lines are removed (the
//! envelope carries Bcc; RFC 5322 §3.6.3), as are `Return-Path` (RFC 5321
//! §4.4: added at final delivery) and `X-Postline-ID` (Postline's own). DKIM
//! and `X-Postline-ID` are added at delivery, as for API mail.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use mail_parser::{HeaderName, MessageParser};
use uuid::Uuid;

use super::header_set;
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
    for (field, domain) in &parsed.authors {
        state
            .domains
            .rule
            .check(TenantId(tenant.id), domain, field)
            .await?;
    }
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
    /// `(field, domain)` of every author or sender address, From first.
    authors: Vec<(&'static str, String)>,
    to: Vec<String>,
    cc: Vec<String>,
    bcc: Vec<String>,
    reply_to: Vec<String>,
    subject: String,
    message_id: String,
    raw: Vec<u8>,
    /// `X-Postline-Stream`, or transactional.
    stream: super::stream::Stream,
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
            stream: self.stream.as_str().into(),
            unsubscribe: false,
            // Sent as submitted: never rewritten for tracking.
            track: 0,
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
pub(super) fn plain_text(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn parse(sub: RawSubmission) -> AppResult<Parsed> {
    let mut recipients = Vec::with_capacity(sub.recipients.len());
    for (i, r) in sub.recipients.iter().enumerate() {
        recipients.push(parse_email(&format!("to[{i}]"), r)?);
    }
    header_set::check(&sub.message)?;
    let msg = MessageParser::default()
        .parse_headers(&sub.message)
        .ok_or_else(|| AppError::invalid("message", "is not an RFC 5322 message"))?;
    let mailbox = header_set::single_mailbox("from", msg.from())?;
    let from_domain = mailbox.email.domain().to_ascii_lowercase();
    let mut authors = vec![("from", from_domain.clone())];
    if msg.header_raw(HeaderName::Sender).is_some() {
        let sender = header_set::single_mailbox("sender", msg.sender())?;
        authors.push(("sender", sender.email.domain().to_ascii_lowercase()));
    }
    header_set::resent_domains(&msg, &mut authors)?;
    let stream = match msg.header_raw(super::stream::HEADER) {
        None => super::stream::Stream::default(),
        Some(v) => super::stream::Stream::parse(v).ok_or_else(|| {
            AppError::invalid(super::stream::HEADER, super::stream::Stream::EXPECTED)
        })?,
    };
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
    drop(msg);
    let mut raw = added.into_bytes();
    raw.reserve(sub.message.len());
    header_set::strip_headers(&sub.message, header_set::REMOVED, &mut raw);
    Ok(Parsed {
        id,
        from: mailbox.to_string(),
        from_address: mailbox.email.to_string(),
        authors,
        to,
        cc,
        bcc,
        reply_to,
        subject,
        message_id,
        raw,
        stream,
    })
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

    fn parsed(m: &[u8]) -> AppResult<Parsed> {
        parse(RawSubmission {
            recipients: vec!["b@y.com".into()],
            message: m.to_vec(),
            scheduled_at: None,
        })
    }

    fn code(r: AppResult<Parsed>) -> &'static str {
        match r {
            Err(AppError::Validation { code, .. }) => code,
            Err(e) => panic!("{e:?}"),
            Ok(_) => "accepted",
        }
    }

    #[test]
    fn every_author_and_sender_address_is_named_for_the_domain_rule() {
        let p = parsed(b"From: A <a@X.com>\r\nSender: s@sub.y.com\r\nResent-From: r@r1.com, q@r2.com\r\nResent-Sender: t@r3.com\r\nTo: b@y.com\r\n\r\nb\r\n").unwrap();
        let fields: Vec<(&str, &str)> = p.authors.iter().map(|(f, d)| (*f, d.as_str())).collect();
        assert_eq!(
            fields,
            vec![
                ("from", "x.com"),
                ("sender", "sub.y.com"),
                ("resent_from", "r1.com"),
                ("resent_from", "r2.com"),
                ("resent_sender", "r3.com")
            ]
        );
    }

    #[test]
    fn from_and_sender_hold_exactly_one_mailbox() {
        for m in [
            &b"From: a@x.com, c@z.com\r\n\r\nb\r\n"[..],
            b"From: team: a@x.com;\r\n\r\nb\r\n",
            b"From: not an address\r\n\r\nb\r\n",
            b"From: a@x.com\r\nSender: s@y.com, t@z.com\r\n\r\nb\r\n",
            b"From: a@x.com\r\nSender:\r\n\r\nb\r\n",
            b"From: a@x.com\r\nFrom: c@z.com\r\n\r\nb\r\n",
        ] {
            assert_eq!(
                code(parsed(m)),
                header_set::MALFORMED,
                "{}",
                String::from_utf8_lossy(m)
            );
        }
    }

    #[test]
    fn postline_and_final_delivery_headers_are_removed() {
        assert!(header_set::REMOVED.contains(&SCHEDULE_HEADER.to_ascii_lowercase().as_bytes()));
        let p = parsed(b"Return-Path: <x@evil.com>\r\nFrom: a@x.com\r\nX-Postline-ID: forged\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <m@x.com>\r\n\r\nX-Postline-ID: body\r\n").unwrap();
        assert_eq!(
            String::from_utf8(p.raw).unwrap(),
            "From: a@x.com\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <m@x.com>\r\n\r\nX-Postline-ID: body\r\n"
        );
    }
}
