//! The send body and its validation (API.md "Sending"). Everything a message
//! will carry into a header is parsed here, at the edge: a value with CR, LF or
//! NUL never reaches the queue.

use std::collections::BTreeMap;

use base64::Engine;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::body::bounded;
use crate::domain::has_line_break_or_nul;
use crate::error::{AppError, AppResult, FieldError};

pub use super::one_or_many::OneOrMany;
use super::size::SizeLimits;

pub const MAX_RECIPIENTS: usize = 50;
pub const MAX_BATCH: usize = 100;
pub const MAX_HEADERS: usize = 50;
pub const MAX_TAGS: usize = 20;
/// The most attachments a message body may list, whatever
/// `limits.max_attachments` (at most this) says: the bound while reading.
pub const MAX_ATTACHMENTS: usize = 100;
const MAX_SUBJECT: usize = 998;

#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentInput {
    pub filename: String,
    pub content: String,
    pub content_type: Option<String>,
}

/// One message as posted to `POST /v1/emails` (or inside a batch).
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Platform style: an admin key names the tenant (id or external_id).
    pub tenant_id: Option<String>,
    pub from: String,
    pub to: Option<OneOrMany>,
    pub cc: Option<OneOrMany>,
    pub bcc: Option<OneOrMany>,
    pub reply_to: Option<OneOrMany>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    #[serde(default, deserialize_with = "bounded::opt_map::<_, _, MAX_HEADERS>")]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(
        default,
        deserialize_with = "bounded::opt_vec::<_, _, MAX_ATTACHMENTS>"
    )]
    pub attachments: Option<Vec<AttachmentInput>>,
    #[serde(default, deserialize_with = "bounded::opt_map::<_, _, MAX_TAGS>")]
    pub tags: Option<BTreeMap<String, String>>,
    /// A template of the tenant (name or id), rendered with `variables`;
    /// explicit subject/html/text override its parts.
    pub template: Option<String>,
    /// Kept as the JSON text it came as, for the render process to parse: as
    /// a `Value` a list of small numbers takes sixteen times its size.
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Box<RawValue>>,
    /// Send no earlier than this (RFC 3339, in the future, at most 30 days
    /// ahead): the message is `scheduled` until then.
    #[schema(format = DateTime)]
    pub scheduled_at: Option<String>,
    /// `transactional` (default) or `broadcast`.
    pub stream: Option<super::stream::Stream>,
    /// Add RFC 8058 one-click unsubscribe headers (always on broadcast mail).
    pub unsubscribe: Option<bool>,
    /// Open and click tracking for this message; absent members take the
    /// tenant's `settings.tracking` (default off).
    pub track: Option<crate::tracking::TrackInput>,
}

impl SendRequest {
    /// Fills the parts the body leaves out from a rendered template and
    /// drops the template reference.
    pub fn with_rendered(mut self, r: crate::templates::render::Rendered) -> SendRequest {
        self.template = None;
        self.variables = None;
        self.subject = self.subject.or(Some(r.subject));
        self.html = self.html.or(r.html);
        self.text = self.text.or(r.text);
        self
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_BATCH>")]
    pub emails: Vec<SendRequest>,
}

/// What the tenant contributes to a message: its defaults. (The From-domain
/// rule is `domains::sending`, applied by the service.)
#[derive(Clone, Debug)]
pub struct SenderProfile {
    pub from_name: Option<String>,
    pub reply_to: Option<String>,
}

/// A message that passed every rule, ready to be queued.
#[derive(Clone, Debug)]
pub struct ValidEmail {
    pub from: String,
    pub envelope_from: String,
    pub from_domain: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub reply_to: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub attachments: Vec<AttachmentInput>,
    pub tags: BTreeMap<String, String>,
    pub scheduled_at: Option<chrono::DateTime<chrono::Utc>>,
    pub stream: super::stream::Stream,
    pub unsubscribe: bool,
    /// As asked (resolved against the tenant's default by the service).
    pub track: Option<crate::tracking::TrackInput>,
}

/// Headers Postline writes itself; a custom header may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "return-path",
    "received",
    "sender",
    "dkim-signature",
    // A reader may show these as the author or sender; the From-domain
    // rule covers `from` alone, so they are not the caller's to set.
    "resent-from",
    "resent-sender",
    // Postline's own bounce token, added at delivery.
    "x-postline-id",
];

struct Checker {
    prefix: String,
    errors: Vec<FieldError>,
}

impl Checker {
    fn err(&mut self, field: impl AsRef<str>, message: impl Into<String>) {
        let field = field.as_ref();
        self.errors.push(FieldError::new(
            format!("{}{}", self.prefix, field),
            message,
        ));
    }

    fn header_text(&mut self, field: &str, value: &str, max: usize) -> bool {
        if has_line_break_or_nul(value) {
            self.err(field, "must not contain CR, LF or NUL");
            false
        } else if value.chars().count() > max {
            self.err(field, format!("must be at most {max} characters"));
            false
        } else {
            true
        }
    }

    fn mailbox(&mut self, field: &str, raw: &str) -> Option<Mailbox> {
        if !self.header_text(field, raw, 998) {
            return None;
        }
        match raw.trim().parse::<Mailbox>() {
            Ok(m) if m.name.as_deref().is_none_or(|n| !has_line_break_or_nul(n)) => Some(m),
            _ => {
                self.err(field, "is not a valid e-mail address");
                None
            }
        }
    }

    fn mailboxes(&mut self, field: &str, list: Option<OneOrMany>) -> Vec<String> {
        let list = list.map(OneOrMany::into_vec).unwrap_or_default();
        list.iter()
            .enumerate()
            .filter_map(|(i, raw)| {
                self.mailbox(&format!("{field}[{i}]"), raw)
                    .map(|m| m.to_string())
            })
            .collect()
    }
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 76 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

impl SendRequest {
    /// Validates against the tenant's profile. `prefix` names the position in
    /// a batch (`emails[3].`) so a 422 points at the failing message.
    pub fn validate(
        self,
        profile: &SenderProfile,
        prefix: &str,
        limits: &SizeLimits,
    ) -> AppResult<ValidEmail> {
        let mut c = Checker {
            prefix: prefix.to_string(),
            errors: Vec::new(),
        };
        if self.template.is_some() {
            // The service renders templates before validation; one left here
            // was never resolved.
            c.err("template", "was not rendered");
        } else if self.variables.is_some() {
            c.err("variables", "is only allowed with template");
        }
        let from = c.mailbox("from", &self.from);
        let to = c.mailboxes("to", self.to);
        let cc = c.mailboxes("cc", self.cc);
        let bcc = c.mailboxes("bcc", self.bcc);
        let mut reply_to = c.mailboxes("reply_to", self.reply_to);
        let total = to.len() + cc.len() + bcc.len();
        if c.errors.is_empty() && total == 0 {
            c.err("to", "at least one recipient is required in to, cc or bcc");
        }
        if total > MAX_RECIPIENTS {
            c.err(
                "to",
                format!("at most {MAX_RECIPIENTS} recipients in to, cc and bcc together"),
            );
        }
        let subject = match self.subject {
            Some(s) if c.header_text("subject", &s, MAX_SUBJECT) => {
                if s.trim().is_empty() {
                    c.err("subject", "must not be empty");
                }
                s
            }
            Some(_) => String::new(),
            None => {
                c.err("subject", "is required");
                String::new()
            }
        };
        let text = self.text.filter(|t| !t.is_empty());
        let html = self.html.filter(|h| !h.is_empty());
        if text.is_none() && html.is_none() {
            c.err("text", "one of text or html is required");
        }
        for body in [&text, &html].into_iter().flatten() {
            if body.contains('\0') {
                c.err("text", "bodies must not contain NUL");
            }
        }
        let headers = self.headers.unwrap_or_default();
        if headers.len() > MAX_HEADERS {
            c.err("headers", format!("at most {MAX_HEADERS} custom headers"));
        }
        let mut seen = std::collections::HashSet::with_capacity(headers.len());
        for (name, value) in &headers {
            let field = format!("headers.{name}");
            let lower = name.to_ascii_lowercase();
            if !valid_header_name(name) {
                c.err(&field, "is not a valid header name");
            } else if RESERVED_HEADERS.contains(&lower.as_str()) {
                c.err(&field, "is set by Postline and cannot be overridden");
            } else if !seen.insert(lower) {
                c.err(&field, "is given twice (header names are case-insensitive)");
            }
            c.header_text(&field, value, 998);
        }
        let mut attachments = self.attachments.unwrap_or_default();
        if attachments.len() > limits.max_attachments {
            c.err(
                "attachments",
                format!("at most {} attachments", limits.max_attachments),
            );
            // Not decoded: the count alone refuses the message.
            attachments.clear();
        }
        let mut total_bytes = 0usize;
        let mut sizes = Vec::with_capacity(attachments.len());
        for (i, a) in attachments.iter().enumerate() {
            let f = format!("attachments[{i}]");
            if a.filename.trim().is_empty() || a.filename.contains(['/', '\\']) {
                c.err(format!("{f}.filename"), "must be a plain file name");
            }
            c.header_text(&format!("{f}.filename"), &a.filename, 255);
            match base64::engine::general_purpose::STANDARD.decode(a.content.as_bytes()) {
                Ok(bytes) => {
                    if bytes.len() > limits.max_attachment_bytes {
                        c.err(
                            format!("{f}.content"),
                            format!(
                                "decodes to {} bytes; at most {} per attachment",
                                bytes.len(),
                                limits.max_attachment_bytes
                            ),
                        );
                    }
                    total_bytes += bytes.len();
                    sizes.push(bytes.len());
                }
                Err(_) => c.err(format!("{f}.content"), "must be valid base64"),
            }
            if let Some(ct) = &a.content_type {
                if has_line_break_or_nul(ct) || ContentType::parse(ct).is_err() {
                    c.err(format!("{f}.content_type"), "is not a valid MIME type");
                }
            }
        }
        if total_bytes > limits.max_attachments_total_bytes {
            c.err(
                "attachments",
                format!(
                    "attachments decode to {total_bytes} bytes; at most {} in total",
                    limits.max_attachments_total_bytes
                ),
            );
        }
        let scheduled_at = self.scheduled_at.as_deref().and_then(|raw| {
            super::schedule::parse_scheduled_at(raw, chrono::Utc::now())
                .map_err(|m| c.err("scheduled_at", m))
                .ok()
        });
        let tags = self.tags.unwrap_or_default();
        if tags.len() > MAX_TAGS {
            c.err("tags", format!("at most {MAX_TAGS} tags"));
        }
        for (k, v) in &tags {
            let ok_key = (1..=64).contains(&k.len())
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !ok_key {
                c.err(
                    format!("tags.{k}"),
                    "tag names are 1-64 characters of a-z, 0-9, '_', '-', '.'",
                );
            }
            c.header_text(&format!("tags.{k}"), v, 256);
        }

        let Some(mut from) = from else {
            return Err(fail(c.errors));
        };
        let from_domain = from.email.domain().to_ascii_lowercase();
        if !c.errors.is_empty() {
            return Err(fail(c.errors));
        }
        if from.name.is_none() {
            from.name = profile.from_name.clone();
        }
        if reply_to.is_empty() {
            reply_to.extend(profile.reply_to.clone());
        }
        let valid = ValidEmail {
            envelope_from: from.email.to_string(),
            from: from.to_string(),
            from_domain,
            to,
            cc,
            bcc,
            reply_to,
            subject,
            text,
            html,
            headers,
            attachments,
            tags,
            scheduled_at,
            stream: self.stream.unwrap_or_default(),
            unsubscribe: self.unsubscribe.unwrap_or(false),
            track: self.track,
        };
        super::size::check_message(&valid, &sizes, limits, prefix)?;
        Ok(valid)
    }
}

fn fail(errors: Vec<FieldError>) -> AppError {
    AppError::invalid_fields(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> SenderProfile {
        SenderProfile {
            from_name: Some("Acme".into()),
            reply_to: Some("support@acme.com".into()),
        }
    }

    fn limits() -> SizeLimits {
        SizeLimits {
            max_message_bytes: 1 << 20,
            max_attachments: 3,
            max_attachment_bytes: 1000,
            max_attachments_total_bytes: 2000,
        }
    }

    fn req(v: serde_json::Value) -> SendRequest {
        serde_json::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn defaults_are_applied() {
        let ok = req(serde_json::json!({"from": "noreply@mail.acme.com", "to": "a@x.com", "subject": "Hi", "text": "t"}))
            .validate(&profile(), "", &limits())
            .unwrap();
        assert_eq!(ok.from, "Acme <noreply@mail.acme.com>");
        assert_eq!(ok.reply_to, vec!["support@acme.com".to_string()]);
        assert_eq!(ok.from_domain, "mail.acme.com");
    }

    #[test]
    fn variables_stay_json_text_and_lists_are_bounded_while_reading() {
        use crate::error::AppError;
        let field = |body: &str| match crate::body::parse_json::<SendRequest>(body.as_bytes()) {
            Err(AppError::Validation { errors, .. }) => {
                (errors[0].field.clone(), errors[0].message.clone())
            }
            other => panic!("{body}: {other:?}"),
        };
        let ok: SendRequest =
            crate::body::parse_json(br#"{"from": "a@b.test", "variables": {"n": [1, 2]}}"#)
                .unwrap();
        assert_eq!(ok.variables.unwrap().get(), r#"{"n": [1, 2]}"#);
        // The path-tracking second parse reads raw variables too.
        assert_eq!(
            field(r#"{"variables": {"n": 1}, "from": "a@b.test", "to": 42}"#).0,
            "to"
        );
        let many = |n: usize| format!(r#"{{"from": "a@b.test", "cc": {:?}}}"#, vec!["a@x.test"; n]);
        assert!(crate::body::parse_json::<SendRequest>(many(MAX_RECIPIENTS).as_bytes()).is_ok());
        assert_eq!(
            field(&many(MAX_RECIPIENTS + 1)),
            (
                "cc".into(),
                "at most 50 recipients in to, cc and bcc together".into()
            )
        );
        let tags: serde_json::Map<String, serde_json::Value> = (0..=MAX_TAGS)
            .map(|i| (format!("t{i}"), serde_json::json!("v")))
            .collect();
        let body = serde_json::json!({"from": "a@b.test", "tags": tags}).to_string();
        assert_eq!(
            field(&body),
            ("tags".into(), "must have at most 20 entries".into())
        );
        let attachments =
            vec![serde_json::json!({"filename": "a", "content": ""}); MAX_ATTACHMENTS + 1];
        let body = serde_json::json!({"from": "a@b.test", "attachments": attachments}).to_string();
        assert_eq!(
            field(&body),
            ("attachments".into(), "must have at most 100 items".into())
        );
        let batch = serde_json::json!({"emails": vec![serde_json::json!({"from": "a@b.test"}); MAX_BATCH + 1]});
        match crate::body::parse_json::<BatchRequest>(batch.to_string().as_bytes()) {
            Err(AppError::Validation { errors, .. }) => {
                assert_eq!(errors[0].field, "emails");
                assert_eq!(errors[0].message, "must have at most 100 items");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn header_injection_is_refused() {
        for v in [
            serde_json::json!({"from": "a@acme.com\r\nBcc: x@y.z", "to": "a@x.com", "subject": "s", "text": "t"}),
            serde_json::json!({"from": "a@acme.com", "to": "a@x.com", "subject": "s\nBcc: x@y.z", "text": "t"}),
            serde_json::json!({"from": "a@acme.com", "to": "a@x.com", "subject": "s", "text": "t", "headers": {"X-A": "v\r\nBcc: x"}}),
        ] {
            assert!(req(v).validate(&profile(), "", &limits()).is_err());
        }
    }

    #[test]
    fn custom_headers_neither_name_an_author_nor_repeat_a_name() {
        for headers in [
            serde_json::json!({"Resent-From": "ceo@other.com"}),
            serde_json::json!({"resent-sender": "ceo@other.com"}),
            serde_json::json!({"X-Postline-ID": "forged"}),
            serde_json::json!({"In-Reply-To": "<a@x>", "in-reply-to": "<b@x>"}),
        ] {
            let v = serde_json::json!({"from": "a@acme.com", "to": "a@x.com", "subject": "s", "text": "t", "headers": headers});
            assert!(
                req(v).validate(&profile(), "", &limits()).is_err(),
                "{headers}"
            );
        }
    }
}
