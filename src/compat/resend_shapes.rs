//! Resend's shapes (API.md "Resend-compatible API"): the request bodies as
//! Resend documents them, their mapping to a `/v1` send body, and Resend's
//! error body for every `AppError`. The handlers are in [`super::resend`].

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::Content;
use crate::body::bounded;
use crate::emails::input::{OneOrMany, MAX_ATTACHMENTS, MAX_HEADERS, MAX_TAGS};
use crate::error::{AppError, AppResult};

/// Resend's error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResendError {
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    /// Resend's error name: validation_error, missing_api_key, invalid_api_key,
    /// not_found, rate_limit_exceeded, daily_quota_exceeded, invalid_idempotent_request, ...
    pub name: String,
    pub message: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendTag {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendAttachment {
    pub filename: Option<String>,
    /// Base64 string, a list of byte values, or {"type": "Buffer", "data": [...]}.
    pub content: Option<Content>,
    /// Remote attachments (fetched by URL) are not supported: 422.
    pub path: Option<String>,
    pub content_type: Option<String>,
    /// Inline attachments are not supported: 422.
    pub content_id: Option<String>,
}

/// One message as Resend's `POST /emails` takes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendEmail {
    pub from: String,
    pub to: Option<OneOrMany>,
    pub cc: Option<OneOrMany>,
    pub bcc: Option<OneOrMany>,
    #[serde(alias = "replyTo")]
    pub reply_to: Option<OneOrMany>,
    pub subject: Option<String>,
    pub html: Option<String>,
    pub text: Option<String>,
    #[serde(default, deserialize_with = "bounded::opt_map::<_, _, MAX_HEADERS>")]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "bounded::opt_vec::<_, _, MAX_TAGS>")]
    pub tags: Option<Vec<ResendTag>>,
    #[serde(
        default,
        deserialize_with = "bounded::opt_vec::<_, _, MAX_ATTACHMENTS>"
    )]
    pub attachments: Option<Vec<ResendAttachment>>,
    /// RFC 3339, in the future, at most 30 days ahead.
    #[serde(alias = "scheduledAt")]
    pub scheduled_at: Option<String>,
    /// Resend sets tracking per domain (`open_tracking`, `click_tracking`);
    /// Postline takes the same names per message (the tenant's
    /// `settings.tracking` stands for the domain setting).
    #[serde(alias = "openTracking")]
    pub open_tracking: Option<bool>,
    #[serde(alias = "clickTracking")]
    pub click_tracking: Option<bool>,
}

/// Resend's batch limit.
pub const MAX_BATCH: usize = 100;

/// `POST /emails/batch`: a list of 1 to 100 messages, read straight into
/// messages (at most 100, refused while reading past that); errors name
/// `emails[i].field`.
pub fn parse_batch(raw: &[u8]) -> AppResult<Vec<ResendEmail>> {
    let refused = || AppError::invalid("", format!("must be a list of 1 to {MAX_BATCH} emails"));
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
        // Valid JSON of another shape, or not JSON at all.
        return match serde_json::from_slice::<serde::de::IgnoredAny>(raw) {
            Ok(_) => Err(refused()),
            Err(e) => Err(AppError::MalformedJson(format!(
                "The body is not valid JSON: {e}"
            ))),
        };
    }
    let list =
        crate::body::parse_json_list::<bounded::List<ResendEmail, MAX_BATCH>>(raw, "emails")?.0;
    if list.is_empty() {
        return Err(refused());
    }
    Ok(list)
}

/// `PATCH /emails/{id}`: the Python SDK repeats the id in the body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendUpdate {
    #[schema(format = DateTime)]
    pub scheduled_at: String,
    pub id: Option<String>,
}

/// `GET /emails`: `limit` (1-100) and `after` (an email id) as Resend pages.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResendListQuery {
    /// Emails per page, 1-100, default 20.
    pub limit: Option<i64>,
    /// The id of the last email of the previous page.
    pub after: Option<String>,
    /// Not supported (422): page forward with after.
    pub before: Option<String>,
}

fn list_of(v: Option<OneOrMany>) -> Vec<String> {
    match v {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    }
}

/// A Resend message as a `/v1` send body.
pub fn to_v1(e: ResendEmail, prefix: &str) -> AppResult<Value> {
    let mut attachments = Vec::new();
    for (i, a) in e.attachments.unwrap_or_default().into_iter().enumerate() {
        let f = format!("{prefix}attachments[{i}]");
        if a.path.is_some() {
            return Err(AppError::invalid(
                format!("{f}.path"),
                "remote attachments are not supported: send content",
            ));
        }
        if a.content_id.is_some() {
            return Err(AppError::invalid(
                format!("{f}.content_id"),
                "inline attachments are not supported",
            ));
        }
        let content = a
            .content
            .ok_or_else(|| AppError::invalid(format!("{f}.content"), "is required"))?
            .into_base64(&format!("{f}.content"))?;
        attachments.push(json!({
            "filename": a.filename.unwrap_or_default(),
            "content": content,
            "content_type": a.content_type,
        }));
    }
    let tags: BTreeMap<String, String> = e
        .tags
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.name, t.value))
        .collect();
    // `X-Postline-Stream` names the stream and is not sent on.
    let mut headers = e.headers;
    let mut stream = None;
    if let Some(h) = headers.as_mut() {
        let names: Vec<String> = h
            .keys()
            .filter(|k| k.eq_ignore_ascii_case(crate::emails::stream::HEADER))
            .cloned()
            .collect();
        for k in names {
            let v = h.remove(&k).unwrap_or_default();
            let s = crate::emails::stream::Stream::parse(&v).ok_or_else(|| {
                AppError::invalid(
                    format!("{prefix}headers.{k}"),
                    crate::emails::stream::Stream::EXPECTED,
                )
            })?;
            stream = Some(s.as_str());
        }
    }
    let mut v = json!({
        "stream": stream,
        "from": e.from,
        "to": list_of(e.to),
        "cc": list_of(e.cc),
        "bcc": list_of(e.bcc),
        "reply_to": list_of(e.reply_to),
        "subject": e.subject,
        "html": e.html,
        "text": e.text,
        "headers": headers,
        "attachments": attachments,
        "tags": tags,
        "scheduled_at": e.scheduled_at,
        "track": (e.open_tracking.is_some() || e.click_tracking.is_some())
            .then(|| json!({"opens": e.open_tracking, "clicks": e.click_tracking})),
    });
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, x| !x.is_null());
    }
    Ok(v)
}

pub fn body_bytes(v: &Value) -> AppResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| AppError::internal("compat body", e))
}

/// Resend's error for an `AppError`; `had_key`: an Authorization header was sent.
pub fn error(e: &AppError, had_key: bool) -> (StatusCode, ResendError) {
    use actix_web::ResponseError;
    super::log_server_error(e);
    let status = e.status_code();
    let (status, name, message) = match e {
        AppError::Unauthorized | AppError::CredentialMissing(_) if !had_key => (
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "Missing API key in the authorization header.".to_string(),
        ),
        AppError::Unauthorized | AppError::CredentialMissing(_) => (
            StatusCode::FORBIDDEN,
            "invalid_api_key",
            "API key is invalid.".to_string(),
        ),
        AppError::MalformedJson(_) => (status, "validation_error", e.public_detail()),
        AppError::Validation { errors, .. }
            if errors.iter().any(|f| f.field == "Idempotency-Key") =>
        {
            (
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                e.public_detail(),
            )
        }
        AppError::Validation { code, .. } => {
            let name = match *code {
                "from_domain_not_allowed" => "invalid_from_address",
                _ => "validation_error",
            };
            (status, name, e.public_detail())
        }
        AppError::Conflict { code, .. } => {
            let name = match *code {
                "idempotency_key_reused" => "invalid_idempotent_request",
                other => other,
            };
            (status, name, e.public_detail())
        }
        AppError::Forbidden { code, .. } => {
            let name = match *code {
                "insufficient_permission" => "restricted_api_key",
                "tenant_key_required" | "admin_only" => "invalid_api_key",
                other => other,
            };
            (status, name, e.public_detail())
        }
        AppError::TooManyRequests { code, .. } => {
            let name = match *code {
                "daily_quota_exceeded" => "daily_quota_exceeded",
                _ => "rate_limit_exceeded",
            };
            (status, name, e.public_detail())
        }
        AppError::NotFound => (status, "not_found", "Email not found.".to_string()),
        AppError::MethodNotAllowed => (status, "method_not_allowed", e.public_detail()),
        AppError::Internal(_) => (status, "internal_server_error", e.public_detail()),
        _ => (status, "application_error", e.public_detail()),
    };
    let body = ResendError {
        status_code: status.as_u16(),
        name: name.to_string(),
        message,
    };
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> (String, String) {
        match parse_batch(body.as_bytes()) {
            Err(AppError::Validation { errors, .. }) => {
                (errors[0].field.clone(), errors[0].message.clone())
            }
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_batch_is_a_list_of_1_to_100_read_as_messages() {
        let one = r#"{"from": "a@b.test", "to": "c@d.test"}"#;
        let list = |n: usize| format!("[{}]", vec![one; n].join(","));
        assert_eq!(parse_batch(list(MAX_BATCH).as_bytes()).unwrap().len(), 100);
        assert_eq!(
            refusal(&list(MAX_BATCH + 1)),
            ("emails".into(), "must have at most 100 items".into())
        );
        let shape = (
            "".to_string(),
            "must be a list of 1 to 100 emails".to_string(),
        );
        assert_eq!(refusal("[]"), shape);
        assert_eq!(refusal(r#"{"emails": []}"#), shape);
        assert_eq!(
            refusal(r#"[{"from": "a@b.test"}, {"from": 5}]"#),
            (
                "emails[1].from".into(),
                "must be a string, not the number 5".into()
            )
        );
        assert!(matches!(
            parse_batch(b"[{"),
            Err(AppError::MalformedJson(_))
        ));
    }
}
