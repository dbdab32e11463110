//! Postmark's request and answer shapes (PascalCase) and their mapping onto
//! a `/v1` send body; the handlers are in `compat::postmark`.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::body::bounded;
use crate::emails::input::{MAX_ATTACHMENTS, MAX_HEADERS, MAX_TAGS};
use crate::error::{AppError, AppResult};

/// Postmark's error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct PostmarkError {
    /// 10 bad or missing token (or one that may not send), 300 invalid
    /// request, 400 sender not allowed, 406 inactive (suppressed) recipients,
    /// 413 account may not send (suspended tenant), 429 rate limited.
    pub error_code: u16,
    pub message: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct PostmarkHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct PostmarkAttachment {
    pub name: String,
    /// Base64.
    pub content: String,
    pub content_type: Option<String>,
    /// Inline attachments are not supported (422, ErrorCode 300).
    #[serde(rename = "ContentID")]
    pub content_id: Option<String>,
}

/// One message as Postmark's `POST /email` takes it. `TrackOpens` and
/// `TrackLinks` become the `/v1` `track` (issue 29); `MessageStream` `outbound`
/// is the transactional stream, `broadcast` the broadcast one (any other: 422,
/// ErrorCode 1235, as Postmark answers a stream the server does not have).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct PostmarkEmail {
    pub from: String,
    /// Comma-separated addresses.
    pub to: Option<String>,
    pub cc: Option<String>,
    pub bcc: Option<String>,
    pub reply_to: Option<String>,
    pub subject: Option<String>,
    pub html_body: Option<String>,
    pub text_body: Option<String>,
    #[serde(default, deserialize_with = "bounded::opt_vec::<_, _, MAX_HEADERS>")]
    pub headers: Option<Vec<PostmarkHeader>>,
    #[serde(
        default,
        deserialize_with = "bounded::opt_vec::<_, _, MAX_ATTACHMENTS>"
    )]
    pub attachments: Option<Vec<PostmarkAttachment>>,
    /// Stored as the tag `tag`.
    pub tag: Option<String>,
    /// Stored as tags.
    #[serde(default, deserialize_with = "bounded::opt_map::<_, _, MAX_TAGS>")]
    pub metadata: Option<BTreeMap<String, String>>,
    pub track_opens: Option<bool>,
    pub track_links: Option<String>,
    pub message_stream: Option<String>,
}

/// Postmark's answer for one message: `ErrorCode` 0 and the message's
/// `MessageID`, `SubmittedAt` and `To`, or a refusal's `ErrorCode` and
/// `Message` alone (a batch answers one of these per message, in order).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct PostmarkResult {
    pub error_code: u16,
    pub message: String,
    #[serde(rename = "MessageID", skip_serializing_if = "Option::is_none")]
    pub message_id: Option<uuid::Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<chrono::DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Splits a comma-separated address list, keeping commas inside quoted
/// display names (`"Doe, Jane" <j@x.example>`) and angle brackets.
pub fn split_addresses(s: &str) -> Vec<String> {
    let (mut out, mut cur) = (Vec::new(), String::new());
    let (mut quoted, mut angle) = (false, false);
    for ch in s.chars() {
        match ch {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    out.push(cur);
    out.into_iter()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect()
}

/// A Postmark message as a `/v1` send body.
pub fn to_v1(e: PostmarkEmail, prefix: &str) -> AppResult<Value> {
    let mut headers = BTreeMap::new();
    for h in e.headers.unwrap_or_default() {
        headers.insert(h.name, h.value);
    }
    let mut attachments = Vec::new();
    for (i, a) in e.attachments.unwrap_or_default().into_iter().enumerate() {
        if a.content_id.is_some() {
            return Err(AppError::invalid(
                format!("{prefix}Attachments[{i}].ContentID"),
                "inline attachments are not supported",
            ));
        }
        attachments.push(
            json!({"filename": a.name, "content": a.content, "content_type": a.content_type}),
        );
    }
    let mut tags = e.metadata.unwrap_or_default();
    if let Some(t) = e.tag {
        tags.insert("tag".into(), t);
    }
    let stream = match e.message_stream.as_deref() {
        None => None,
        Some(m) => Some(
            crate::emails::stream::Stream::from_postmark(m)
                .ok_or_else(|| unknown_stream(prefix))?
                .as_str(),
        ),
    };
    let list = |v: Option<String>| v.as_deref().map(split_addresses).unwrap_or_default();
    let mut track = serde_json::Map::new();
    if let Some(o) = e.track_opens {
        track.insert("opens".into(), json!(o));
    }
    if let Some(l) = e.track_links.as_deref() {
        let (clicks, links) = crate::tracking::postmark_links(l).ok_or_else(|| {
            AppError::invalid(
                format!("{prefix}TrackLinks"),
                "must be None, HtmlOnly, TextOnly or HtmlAndText",
            )
        })?;
        track.insert("clicks".into(), json!(clicks));
        if let Some(links) = links {
            track.insert("links".into(), json!(links));
        }
    }
    let mut v = json!({
        "stream": stream,
        "from": e.from,
        "to": list(e.to),
        "cc": list(e.cc),
        "bcc": list(e.bcc),
        "reply_to": list(e.reply_to),
        "subject": e.subject,
        "html": e.html_body,
        "text": e.text_body,
        "headers": headers,
        "attachments": attachments,
        "tags": tags,
        "track": (!track.is_empty()).then_some(track),
    });
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, x| !x.is_null());
    }
    Ok(v)
}

/// The `Validation` code of an unknown `MessageStream` (Postmark's 1235).
pub const UNKNOWN_STREAM: &str = "unknown_message_stream";

fn unknown_stream(prefix: &str) -> AppError {
    AppError::Validation {
        code: UNKNOWN_STREAM,
        detail: "The 'MessageStream' provided does not exist on this server: use \"outbound\" or \"broadcast\".".into(),
        errors: vec![crate::error::FieldError::new(
            format!("{prefix}MessageStream"),
            "must be \"outbound\" or \"broadcast\"",
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::split_addresses;

    #[test]
    fn addresses_split_on_commas_outside_quotes_and_brackets() {
        assert_eq!(
            split_addresses(r#"a@x.example, "Doe, Jane" <j@x.example>,b@x.example"#),
            ["a@x.example", r#""Doe, Jane" <j@x.example>"#, "b@x.example"]
        );
        assert!(split_addresses(" , ").is_empty());
    }
}
