//! The Postmark-compatible API (API.md "Postmark-compatible API"):
//! `POST /email` and `POST /email/batch` with `X-Postmark-Server-Token: <tenant
//! key>` (read by the `Principal` extractor on these two paths), PascalCase
//! fields (`postmark_shapes`), Postmark's success and error shapes, sent
//! through `emails::each` (one answer per message).

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::postmark_shapes::{to_v1, PostmarkEmail, PostmarkError, PostmarkResult};
use super::{idempotency_key, tenant_caller};
use crate::auth::Principal;
use crate::body::{bounded, JsonBody};
use crate::domain::Permission;
use crate::emails::each::{self, Idempotent, Outcome, RECIPIENTS_SUPPRESSED};
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

/// Postmark's status and error for an `AppError` (docs/MIGRATING.md). Postmark
/// never answers 403: a key that may not send here (an admin key, a key
/// without `send`) is Postmark's 401/10 like a bad token, and a suspended
/// tenant is 422/413 "account may not send". Everything about the request
/// itself is Postmark's 422.
fn error(e: &AppError) -> (StatusCode, PostmarkError) {
    use actix_web::ResponseError;
    super::log_server_error(e);
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let (status, code, message) = match e {
        AppError::Unauthorized | AppError::CredentialMissing(_) => (
            StatusCode::UNAUTHORIZED,
            10,
            "Request does not contain a valid Server token.".to_string(),
        ),
        AppError::Forbidden { code, .. }
            if matches!(*code, "tenant_suspended" | "tenant_paused") =>
        {
            (unprocessable, 413, e.public_detail())
        }
        AppError::Forbidden { .. } => (StatusCode::UNAUTHORIZED, 10, e.public_detail()),
        AppError::Validation { code, .. } if *code == "from_domain_not_allowed" => {
            (unprocessable, 400, e.public_detail())
        }
        AppError::Validation { code, .. } if *code == super::postmark_shapes::UNKNOWN_STREAM => {
            (unprocessable, 1235, e.public_detail())
        }
        AppError::Validation { code, errors, .. } if *code == RECIPIENTS_SUPPRESSED => {
            let found: Vec<&str> = errors.iter().map(|f| f.message.as_str()).collect();
            let message = format!(
                "You tried to send to recipient(s) that have been marked as inactive. \
                 Found inactive addresses: {}. Inactive recipients are ones that have \
                 generated a hard bounce, a spam complaint, or a manual suppression.",
                found.join(", ")
            );
            (unprocessable, 406, message)
        }
        AppError::Validation { .. }
        | AppError::MalformedJson(_)
        | AppError::UnsupportedMediaType(_)
        | AppError::PayloadTooLarge { .. }
        | AppError::Conflict { .. } => (unprocessable, 300, e.public_detail()),
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

/// One message's entry: accepted (with its `To` as sent), or refused.
fn result(to: &Value, outcome: Outcome) -> PostmarkResult {
    match outcome {
        Ok(a) => PostmarkResult {
            error_code: 0,
            message: "OK".into(),
            message_id: Some(a.id),
            submitted_at: Some(Utc::now()),
            to: Some(
                to.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
            ),
        },
        Err(e) => {
            let (_, pm) = error(&e);
            PostmarkResult {
                error_code: pm.error_code,
                message: pm.message,
                message_id: None,
                submitted_at: None,
                to: None,
            }
        }
    }
}

fn bytes(v: &impl Serialize) -> AppResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| AppError::internal("compat body", e))
}

/// One Postmark message as a `/v1` body, with its `to` list for the answer.
fn message(raw: &[u8]) -> (Value, AppResult<Vec<u8>>) {
    let v1 = crate::body::parse_json::<PostmarkEmail>(raw).and_then(|e| to_v1(e, ""));
    match v1 {
        Ok(v) => (v["to"].clone(), bytes(&v)),
        Err(e) => (Value::Null, Err(e)),
    }
}

/// The batch body: a list of 1 to [`MAX_BATCH`] items, each kept as its
/// JSON text (borrowed from the body, nothing copied) so that each is parsed
/// on its own by [`message`] and a bad one refuses only itself. A longer
/// list is refused while reading, at its 501st item.
fn parse_batch(raw: &[u8]) -> AppResult<Vec<&RawValue>> {
    let refused = || AppError::invalid("", format!("must be a list of 1 to {MAX_BATCH} emails"));
    match serde_json::from_slice::<bounded::List<&RawValue, MAX_BATCH>>(raw) {
        Ok(list) if !list.0.is_empty() => Ok(list.0),
        Err(e) if e.is_syntax() || e.is_eof() => Err(AppError::MalformedJson(format!(
            "The body is not valid JSON: {e}"
        ))),
        // Empty, not a list, or too long.
        _ => Err(refused()),
    }
}

fn idempotent(req: &HttpRequest, kind: &'static str, body: &[u8]) -> AppResult<Option<Idempotent>> {
    Ok(idempotency_key(req)?.map(|key| Idempotent::new(key, kind, body)))
}

/// Send one message.
#[utoipa::path(post, path = "/email", tag = "Postmark", request_body = PostmarkEmail,
    params(("X-Postmark-Server-Token" = String, Header, description = "A tenant API key with send")),
    responses((status = 200, description = "Accepted: ErrorCode 0, Message OK, MessageID, SubmittedAt, To", body = PostmarkResult),
              (status = 401, description = "ErrorCode 10: a bad or missing token, or one that may not send (an admin key, a key without send)", body = PostmarkError, content_type = "application/json"),
              (status = 422, description = "ErrorCode 300 invalid request, 400 From domain not allowed, 406 every recipient suppressed, 413 tenant suspended", body = PostmarkError, content_type = "application/json"),
              (status = "4XX", description = "429 (ErrorCode 429) rate limit or daily quota; 413 body too large", body = PostmarkError, content_type = "application/json")))]
pub async fn send(
    who: Result<Principal, AppError>,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody,
) -> HttpResponse {
    let r = async {
        let who = tenant_caller(who, Permission::Send)?;
        let raw = body.bytes().await?;
        let (to, msg) = message(&raw);
        let idem = idempotent(&req, "postmark_single", &raw)?;
        each::send_each(
            &state,
            &who,
            vec![msg],
            1,
            idem,
            |mut outcomes| match outcomes.pop() {
                Some(Ok(a)) => serde_json::to_value(result(&to, Ok(a)))
                    .map_err(|e| AppError::internal("compat body", e)),
                Some(Err(e)) => Err(e),
                None => Err(AppError::internal("compat", "no outcome for the message")),
            },
        )
        .await
    };
    respond(r.await)
}

/// Send up to 500 messages (a JSON list). Each message is validated on its
/// own: the answer holds one entry per message, in order — ErrorCode 0 for a
/// queued one, the refusal's ErrorCode and Message for a refused one — and
/// the valid ones are queued together. The request is refused whole (and
/// nothing queued) for the token, a suspended tenant, the rate limit or the
/// daily quota, or a body that is not a list of 1 to 500 items.
#[utoipa::path(post, path = "/email/batch", tag = "Postmark", request_body = Vec<PostmarkEmail>,
    params(("X-Postmark-Server-Token" = String, Header, description = "A tenant API key with send")),
    responses((status = 200, description = "One entry per message, in order: ErrorCode 0 with MessageID, SubmittedAt and To, or a refusal's ErrorCode (300, 400, 406) and Message", body = Vec<PostmarkResult>),
              (status = 401, description = "ErrorCode 10: a bad or missing token, or one that may not send (an admin key, a key without send)", body = PostmarkError, content_type = "application/json"),
              (status = 422, description = "ErrorCode 300: not a JSON list of 1 to 500 items; 413: tenant suspended", body = PostmarkError, content_type = "application/json"),
              (status = "4XX", description = "429 (ErrorCode 429) rate limit or daily quota; 413 body too large", body = PostmarkError, content_type = "application/json")))]
pub async fn batch(
    who: Result<Principal, AppError>,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody,
) -> HttpResponse {
    let r = async {
        let who = tenant_caller(who, Permission::Send)?;
        let raw = body.bytes().await?;
        let (tos, messages): (Vec<Value>, Vec<AppResult<Vec<u8>>>) = parse_batch(&raw)?
            .iter()
            .map(|item| message(item.get().as_bytes()))
            .unzip();
        let idem = idempotent(&req, "postmark_batch", &raw)?;
        each::send_each(&state, &who, messages, MAX_BATCH, idem, |outcomes| {
            let out: Vec<PostmarkResult> = outcomes
                .into_iter()
                .zip(&tos)
                .map(|(o, to)| result(to, o))
                .collect();
            serde_json::to_value(out).map_err(|e| AppError::internal("compat body", e))
        })
        .await
    };
    respond(r.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_1_to_500_items_each_parsed_on_its_own() {
        let list = |n: usize| format!("[{}]", vec![r#"{"From": "a@b.test"}"#; n].join(","));
        let raw = list(MAX_BATCH);
        assert_eq!(parse_batch(raw.as_bytes()).unwrap().len(), 500);
        for bad in [list(MAX_BATCH + 1), "[]".into(), "{}".into()] {
            match parse_batch(bad.as_bytes()) {
                Err(AppError::Validation { detail, .. }) => {
                    assert!(
                        detail.contains("must be a list of 1 to 500 emails"),
                        "{detail}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            parse_batch(b"[1,"),
            Err(AppError::MalformedJson(_))
        ));
        // A bad item is kept for its own refusal; the others still parse.
        let raw = r#"[{"From": 5}, {"From": "a@b.test", "To": "c@d.test"}]"#;
        let items = parse_batch(raw.as_bytes()).unwrap();
        let (bad_to, bad) = message(items[0].get().as_bytes());
        assert!(bad_to.is_null() && bad.is_err());
        let (to, good) = message(items[1].get().as_bytes());
        assert_eq!(to, serde_json::json!(["c@d.test"]));
        assert!(good.is_ok());
    }
}
