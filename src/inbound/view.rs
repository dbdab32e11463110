//! The received-message object (API.md "Inbound mail for tenants"), the
//! `email.received` payload built from it (small attachments inlined as
//! base64 `content`), and Postmark's inbound JSON for `"format": "postmark"`
//! routes.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::Verdicts;
use super::model::{MessageRow, RouteRow};
use super::parse::{AttachmentMeta, Header, Mailbox, Parsed};
use super::rspamd::Spam;

/// A route as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteView {
    pub id: Uuid,
    /// `support@acme.com` or `*@reply.acme.com`.
    #[serde(rename = "match")]
    pub match_addr: String,
    /// `webhook`, `hold` or `reject`.
    pub action: String,
    pub webhook_id: Option<Uuid>,
    /// `postline` (the received-message object) or `postmark`.
    pub format: String,
    pub created_at: DateTime<Utc>,
}

impl From<RouteRow> for RouteView {
    fn from(r: RouteRow) -> Self {
        RouteView {
            id: r.id,
            match_addr: r.match_addr,
            action: r.action,
            webhook_id: r.webhook_id,
            format: r.format,
            created_at: r.created_at,
        }
    }
}

/// A received message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceivedView {
    pub id: Uuid,
    pub route_id: Option<Uuid>,
    pub received_at: DateTime<Utc>,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    /// The envelope recipient it was accepted for (with its `+hash`).
    pub recipient: String,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    /// A message this tenant sent that this one answers.
    pub in_reply_to_email_id: Option<Uuid>,
    pub mailbox_hash: Option<String>,
    /// Null once the content is purged (`retention.content_days`).
    pub text: Option<String>,
    pub html: Option<String>,
    pub stripped_text_reply: Option<String>,
    pub headers: Vec<Header>,
    pub attachments: Vec<AttachmentMeta>,
    pub auth: Verdicts,
    pub spam: Option<Spam>,
    /// `delivered`, `pending`, `failed`, `held` or `rejected`.
    pub status: String,
    pub content_purged_at: Option<DateTime<Utc>>,
}

impl ReceivedView {
    /// `delivery`: the `email.received` delivery's status, when there is one.
    pub fn new(r: MessageRow, delivery: Option<&str>) -> ReceivedView {
        let parsed: Parsed = r
            .content
            .and_then(|c| serde_json::from_value(c).ok())
            .unwrap_or_default();
        let status = match (r.status.as_str(), delivery) {
            ("pending", Some("succeeded")) => "delivered".to_string(),
            ("pending", Some("failed")) => "failed".to_string(),
            (s, _) => s.to_string(),
        };
        ReceivedView {
            id: r.id,
            route_id: r.route_id,
            received_at: r.created_at,
            from: r.from_addr,
            to: r.to_addrs,
            cc: r.cc_addrs,
            recipient: r.recipient,
            subject: r.subject,
            message_id: r.message_id,
            in_reply_to_email_id: r.in_reply_to_email_id,
            mailbox_hash: r.mailbox_hash,
            text: parsed.text,
            html: parsed.html,
            stripped_text_reply: parsed.stripped_text_reply,
            headers: parsed.headers,
            attachments: parsed.attachments,
            auth: serde_json::from_value(r.auth).unwrap_or_else(|_| Verdicts::unknown()),
            spam: r.spam.and_then(|s| serde_json::from_value(s).ok()),
            status,
            content_purged_at: r.content_purged_at,
        }
    }
}

/// `email.received`'s `data`: the object, attachments up to the inline
/// bound with their base64 `content` (`contents[i]` is `None` above it).
pub fn webhook_data(view: &ReceivedView, contents: &[Option<Vec<u8>>]) -> Value {
    let mut data = serde_json::to_value(view).unwrap_or(Value::Null);
    if let Some(list) = data.get_mut("attachments").and_then(Value::as_array_mut) {
        for (i, a) in list.iter_mut().enumerate() {
            if let (Some(obj), Some(Some(bytes))) = (a.as_object_mut(), contents.get(i)) {
                obj.insert("content".into(), Value::String(B64.encode(bytes)));
            }
        }
    }
    data
}

/// The Standard Webhooks envelope of our own format.
pub fn webhook_payload(view: &ReceivedView, contents: &[Option<Vec<u8>>]) -> Value {
    json!({
        "type": super::EVENT,
        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": webhook_data(view, contents),
    })
}

fn full(m: &Mailbox, hash: &str) -> Value {
    json!({"Email": m.email, "Name": m.name.clone().unwrap_or_default(), "MailboxHash": hash})
}

fn joined(list: &[Mailbox]) -> String {
    list.iter()
        .map(|m| match &m.name {
            Some(n) if !n.is_empty() => format!("\"{n}\" <{}>", m.email),
            _ => m.email.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Postmark's inbound webhook JSON (its documented example's fields), so a
/// Postmark inbound handler reads it unchanged. Larger attachments carry no
/// `Content` (fetch them from `/v1/inbound/{id}/attachments/{index}`).
pub fn postmark_payload(
    view: &ReceivedView,
    parsed: &Parsed,
    contents: &[Option<Vec<u8>>],
) -> Value {
    let hash = view.mailbox_hash.clone().unwrap_or_default();
    let from = parsed.from.clone().unwrap_or_default();
    let mut headers: Vec<Value> = parsed
        .headers
        .iter()
        .map(|h| json!({"Name": h.name, "Value": h.value}))
        .collect();
    if let Some(s) = &view.spam {
        let spam = matches!(
            s.action.as_str(),
            "reject" | "add header" | "rewrite subject"
        );
        headers.push(json!({"Name": "X-Spam-Status", "Value": if spam { "Yes" } else { "No" }}));
        headers.push(json!({"Name": "X-Spam-Score", "Value": s.score.to_string()}));
    }
    let date = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("date"))
        .map(|h| h.value.clone())
        .unwrap_or_default();
    let attachments: Vec<Value> = parsed
        .attachments
        .iter()
        .map(|a| {
            let mut v = json!({
                "Name": a.filename.clone().unwrap_or_default(),
                "ContentType": a.content_type,
                "ContentLength": a.size,
                "ContentID": a.content_id.clone().unwrap_or_default(),
            });
            if let (Some(o), Some(Some(b))) = (v.as_object_mut(), contents.get(a.index)) {
                o.insert("Content".into(), Value::String(B64.encode(b)));
            }
            v
        })
        .collect();
    json!({
        "FromName": from.name.clone().unwrap_or_default(),
        "MessageStream": "inbound",
        "From": from.email,
        "FromFull": full(&from, ""),
        "To": joined(&parsed.to),
        "ToFull": parsed.to.iter().map(|m| full(m, &hash)).collect::<Vec<_>>(),
        "Cc": joined(&parsed.cc),
        "CcFull": parsed.cc.iter().map(|m| full(m, "")).collect::<Vec<_>>(),
        "Bcc": "",
        "BccFull": [],
        "OriginalRecipient": view.recipient,
        "Subject": parsed.subject.clone().unwrap_or_default(),
        "MessageID": view.id,
        "ReplyTo": parsed.reply_to.clone().unwrap_or_default(),
        "MailboxHash": hash,
        "Date": date,
        "TextBody": parsed.text.clone().unwrap_or_default(),
        "HtmlBody": parsed.html.clone().unwrap_or_default(),
        "StrippedTextReply": parsed.stripped_text_reply.clone().unwrap_or_default(),
        "Tag": "",
        "Headers": headers,
        "Attachments": attachments,
    })
}

/// The `inbound` MX records of a domain: one per routed name at it (the
/// domain itself or a subdomain), `required: false`. Their status is
/// `unchecked`: Postline does not look the MX up.
pub fn add_mx_records(
    view: &mut crate::domains::view::DomainView,
    routed: &[String],
    mx_host: &str,
) {
    let suffix = format!(".{}", view.name);
    for name in routed {
        if *name == view.name || name.ends_with(&suffix) {
            view.records.push(crate::domains::view::RecordView {
                purpose: "inbound".into(),
                rtype: "MX".into(),
                name: name.clone(),
                value: format!("10 {mx_host}"),
                required: false,
                status: "unchecked".into(),
            });
        }
    }
}
