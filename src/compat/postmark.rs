//! The Postmark-compatible API (API.md "Postmark-compatible API"):
//! `POST /email` and `POST /email/batch` with `X-Postmark-Server-Token: <tenant
//! key>` (read by the `Principal` extractor on these two paths), PascalCase
//! fields, Postmark's success and error shapes, mapped onto `emails::service`.

use std::collections::BTreeMap;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{accepted_id, idempotency_key, tenant_caller};
use crate::auth::Principal;
use crate::body::JsonBody;
use crate::domain::Permission;
use crate::emails::service;
use crate::error::{AppError, AppResult};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;

/// Postmark's batch limit.
pub const MAX_BATCH: usize = 500;

pub fn endpoints() -> Vec<Endpoint> {
    let send_perm = Access::Tenant(Permission::Send);
    vec![
        Endpoint::new(Method::POST, "/email", send_perm, || web::route().to(send)),
        Endpoint::new(Method::POST, "/email/batch", send_perm, || {
            web::route().to(batch)
        }),
    ]
}

/// Postmark's error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct PostmarkError {
    /// 10 bad or missing token, 300 invalid request, 400 sender not allowed,
    /// 405 not allowed to send, 429 rate limited.
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

/// One message as Postmark's `POST /email` takes it. `TrackOpens`,
/// `TrackLinks` and `MessageStream` are accepted and ignored (Postline does
/// not rewrite mail for tracking and has one stream).
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
    pub headers: Option<Vec<PostmarkHeader>>,
    pub attachments: Option<Vec<PostmarkAttachment>>,
    /// Stored as the tag `tag`.
    pub tag: Option<String>,
    /// Stored as tags.
    pub metadata: Option<BTreeMap<String, String>>,
    pub track_opens: Option<bool>,
    pub track_links: Option<String>,
    pub message_stream: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    emails: Vec<PostmarkEmail>,
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
fn to_v1(e: PostmarkEmail, prefix: &str) -> AppResult<Value> {
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
    let list = |v: Option<String>| v.as_deref().map(split_addresses).unwrap_or_default();
    let mut v = json!({
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
    });
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, x| !x.is_null());
    }
    Ok(v)
}

/// Postmark's error for an `AppError`. Postline's refusals Postmark has no
/// word for (a key's kind or permission, a suspended tenant) keep their
/// 403; everything about the request itself is Postmark's 422.
fn error(e: &AppError) -> (StatusCode, PostmarkError) {
    use actix_web::ResponseError;
    super::log_server_error(e);
    let (status, code, message) = match e {
        AppError::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            10,
            "Request does not contain a valid Server token.".to_string(),
        ),
        AppError::Forbidden { code, .. } => {
            let n = if *code == "tenant_suspended" { 405 } else { 10 };
            (StatusCode::FORBIDDEN, n, e.public_detail())
        }
        AppError::Validation { code, .. } if *code == "from_domain_not_allowed" => {
            (StatusCode::UNPROCESSABLE_ENTITY, 400, e.public_detail())
        }
        AppError::Validation { .. }
        | AppError::MalformedJson(_)
        | AppError::UnsupportedMediaType(_)
        | AppError::PayloadTooLarge { .. }
        | AppError::Conflict { .. } => (StatusCode::UNPROCESSABLE_ENTITY, 300, e.public_detail()),
        AppError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, 429, e.public_detail()),
        other => (other.status_code(), 0, other.public_detail()),
    };
    // ErrorCode 0 means success in Postmark: never send it with an error.
    let error_code = if code == 0 { status.as_u16() } else { code };
    (
        status,
        PostmarkError {
            error_code,
            message,
        },
    )
}

fn respond(r: AppResult<Value>) -> HttpResponse {
    match r {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => {
            let (status, body) = error(&e);
            let mut b = HttpResponse::build(status);
            if let AppError::TooManyRequests {
                retry_after_secs, ..
            } = e
            {
                b.insert_header(("retry-after", retry_after_secs.to_string()));
            }
            let mut resp = b.json(body);
            super::vendor_error_body(&mut resp);
            resp
        }
    }
}

fn accepted(to: &Value, id: Value) -> Value {
    let to = to
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    json!({"To": to, "SubmittedAt": Utc::now(), "MessageID": id, "ErrorCode": 0, "Message": "OK"})
}

fn bytes(v: &Value) -> AppResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| AppError::internal("compat body", e))
}

/// Send one message.
#[utoipa::path(post, path = "/email", tag = "Postmark", request_body = PostmarkEmail,
    params(("X-Postmark-Server-Token" = String, Header, description = "A tenant API key with send")),
    responses((status = 200, description = "{\"To\", \"SubmittedAt\", \"MessageID\", \"ErrorCode\": 0, \"Message\": \"OK\"}", body = Object),
              (status = "4XX", body = PostmarkError, content_type = "application/json")))]
pub async fn send(
    who: Result<Principal, AppError>,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody,
) -> HttpResponse {
    let r = async {
        let who = tenant_caller(who, Permission::Send)?;
        let parsed: PostmarkEmail = body.parse().await?;
        let v1 = to_v1(parsed, "")?;
        let (_, reply) =
            service::send_one(&state, &who, None, &bytes(&v1)?, idempotency_key(&req)?).await?;
        Ok(accepted(&v1["to"], accepted_id(&reply)))
    };
    respond(r.await)
}

/// Send up to 500 messages (a JSON list); all are validated before any is
/// queued (Postmark answers per message; Postline's batch is all or nothing).
#[utoipa::path(post, path = "/email/batch", tag = "Postmark", request_body = Vec<PostmarkEmail>,
    params(("X-Postmark-Server-Token" = String, Header, description = "A tenant API key with send")),
    responses((status = 200, description = "One {\"To\", \"SubmittedAt\", \"MessageID\", \"ErrorCode\": 0, \"Message\": \"OK\"} per message", body = Object),
              (status = "4XX", body = PostmarkError, content_type = "application/json")))]
pub async fn batch(
    who: Result<Principal, AppError>,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody,
) -> HttpResponse {
    let r = async {
        let who = tenant_caller(who, Permission::Send)?;
        let raw = body.bytes().await?;
        let list: Value = serde_json::from_slice(&raw)
            .map_err(|e| AppError::MalformedJson(format!("The body is not valid JSON: {e}")))?;
        let n = list.as_array().map(Vec::len);
        if !n.is_some_and(|n| (1..=MAX_BATCH).contains(&n)) {
            return Err(AppError::invalid(
                "",
                format!("must be a list of 1 to {MAX_BATCH} emails"),
            ));
        }
        let parsed: Batch = crate::body::parse_json(&bytes(&json!({ "emails": list }))?)?;
        let emails = parsed
            .emails
            .into_iter()
            .enumerate()
            .map(|(i, e)| to_v1(e, &format!("emails[{i}].")))
            .collect::<AppResult<Vec<_>>>()?;
        let v1 = bytes(&json!({ "emails": emails }))?;
        let idem = idempotency_key(&req)?;
        let (_, reply) = service::send_batch_up_to(&state, &who, &v1, idem, MAX_BATCH).await?;
        let ids = reply["data"].as_array().cloned().unwrap_or_default();
        let out: Vec<Value> = emails
            .iter()
            .zip(ids)
            .map(|(e, id)| accepted(&e["to"], accepted_id(&id)))
            .collect();
        Ok(Value::Array(out))
    };
    respond(r.await)
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
