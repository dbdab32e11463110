//! The Resend-compatible API (API.md "Resend-compatible API"): `/emails…` at
//! the root, tenant keys as `Authorization: Bearer`, Resend's field names and
//! response and error shapes, mapped onto `emails::service` and
//! `emails::schedule`.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::resend_shapes::{
    body_bytes, error, to_v1, Batch, ResendEmail, ResendError, ResendListQuery, ResendUpdate,
};
use super::{accepted_id, idempotency_key, rate_state, tenant_caller};
use crate::auth::Principal;
use crate::body::JsonBody;
use crate::db::pagination::Cursor;
use crate::domain::Permission;
use crate::emails::{schedule, service};
use crate::error::{AppError, AppResult};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;

pub fn endpoints() -> Vec<Endpoint> {
    let t = Access::Tenant;
    vec![
        Endpoint::new(Method::POST, "/emails", t(Permission::Send), || {
            web::route().to(send)
        }),
        Endpoint::new(Method::GET, "/emails", t(Permission::EmailsRead), || {
            web::route().to(list)
        }),
        Endpoint::new(Method::POST, "/emails/batch", t(Permission::Send), || {
            web::route().to(batch)
        }),
        Endpoint::new(
            Method::GET,
            "/emails/{email}",
            t(Permission::EmailsRead),
            || web::route().to(get),
        ),
        Endpoint::new(
            Method::PATCH,
            "/emails/{email}",
            t(Permission::Send),
            || web::route().to(update),
        ),
        Endpoint::new(
            Method::POST,
            "/emails/{email}/cancel",
            t(Permission::Send),
            || web::route().to(cancel),
        ),
    ]
}

/// Resend's `react` takes a React component, which only a JavaScript
/// runtime can render: the SDKs render it before sending.
fn explain_react(e: AppError) -> AppError {
    crate::body::errors::explain_field(
        e,
        "react",
        "is not supported here: render the React email to HTML first (e.g. with \
         @react-email/render) and send it as `html`",
    )
}

/// The response: Resend's body or error, and Resend's rate-limit headers
/// (`ratelimit-limit`, `ratelimit-remaining`, `ratelimit-reset`; the
/// `RateLimit` pair of `/v1` is added by the response middleware).
fn respond(req: &HttpRequest, r: AppResult<(StatusCode, Value)>) -> HttpResponse {
    let mut resp = match r {
        Ok((status, body)) => HttpResponse::build(status).json(body),
        Err(e) => {
            let had_key = req.headers().contains_key("authorization");
            let (status, body) = error(&e, had_key);
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
    };
    if let Some(rate) = rate_state(req) {
        let h = resp.headers_mut();
        for (name, value) in [
            ("ratelimit-limit", rate.limit.to_string()),
            ("ratelimit-remaining", rate.remaining.to_string()),
            ("ratelimit-reset", rate.reset_secs.to_string()),
        ] {
            if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&value) {
                h.insert(actix_web::http::header::HeaderName::from_static(name), v);
            }
        }
    }
    resp
}

/// Send one message.
#[utoipa::path(post, path = "/emails", tag = "Resend", request_body = ResendEmail,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key + same body within 24 h replays the first response")),
    responses((status = 200, description = "{\"id\"}", body = Object),
              (status = "4XX", body = ResendError, content_type = "application/json")),
    security(("bearer" = ["send"])))]
pub async fn send(
    who: Result<Principal, AppError>,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody,
) -> HttpResponse {
    let r = async {
        let who = tenant_caller(who, Permission::Send)?;
        let parsed: ResendEmail = body.parse().await.map_err(explain_react)?;
        let v1 = body_bytes(&to_v1(parsed, "")?)?;
        let (_, reply) = service::send_one(&state, &who, None, &v1, idempotency_key(&req)?).await?;
        Ok((StatusCode::OK, json!({ "id": accepted_id(&reply) })))
    };
    respond(&req, r.await)
}

/// Send up to 100 messages (a JSON list); all are validated before any is queued.
#[utoipa::path(post, path = "/emails/batch", tag = "Resend", request_body = Vec<ResendEmail>,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key + same body within 24 h replays the first response")),
    responses((status = 200, description = "{\"data\": [{\"id\"}]}", body = Object),
              (status = "4XX", body = ResendError, content_type = "application/json")),
    security(("bearer" = ["send"])))]
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
        if !list.is_array() {
            return Err(AppError::invalid("", "must be a list of emails"));
        }
        let wrapped = body_bytes(&json!({ "emails": list }))?;
        let parsed: Batch = crate::body::parse_json(&wrapped).map_err(explain_react)?;
        let emails = parsed
            .emails
            .into_iter()
            .enumerate()
            .map(|(i, e)| to_v1(e, &format!("emails[{i}].")))
            .collect::<AppResult<Vec<_>>>()?;
        let v1 = body_bytes(&json!({ "emails": emails }))?;
        let (_, reply) = service::send_batch(&state, &who, &v1, idempotency_key(&req)?).await?;
        let data: Vec<Value> = reply["data"]
            .as_array()
            .map(|a| a.iter().map(|x| json!({"id": accepted_id(x)})).collect())
            .unwrap_or_default();
        Ok((StatusCode::OK, json!({ "data": data })))
    };
    respond(&req, r.await)
}

/// Resend's `last_event` for a Postline status.
fn last_event(status: &str) -> &'static str {
    match status {
        "scheduled" => "scheduled",
        "delivered" => "delivered",
        "deferred" => "delivery_delayed",
        "bounced" => "bounced",
        "failed" => "failed",
        "canceled" => "canceled",
        "suppressed" => "suppressed",
        "sending" => "sent",
        _ => "queued",
    }
}

fn tags_list(tags: &Value) -> Vec<Value> {
    tags.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .collect()
        })
        .unwrap_or_default()
}

/// One message in Resend's shape.
#[utoipa::path(get, path = "/emails/{email}", tag = "Resend",
    params(("email" = Uuid, Path, description = "Message id")),
    responses((status = 200, description = "{\"object\": \"email\", \"id\", \"from\", \"to\", ..., \"last_event\"}", body = Object),
              (status = "4XX", body = ResendError, content_type = "application/json")),
    security(("bearer" = ["emails:read"])))]
pub async fn get(
    who: Result<Principal, AppError>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let r = async {
        let who = tenant_caller(who, Permission::EmailsRead)?;
        let (row, d) = service::get_with_content(&state, &who, &path).await?;
        Ok((
            StatusCode::OK,
            json!({
                "object": "email",
                "id": d.id,
                "from": d.from,
                "to": d.to,
                "cc": d.cc,
                "bcc": row.bcc_addrs,
                "reply_to": d.reply_to,
                "subject": d.subject,
                "html": row.html_body,
                "text": row.text_body,
                "created_at": d.created_at,
                "scheduled_at": d.scheduled_at,
                "tags": tags_list(&d.tags),
                "last_event": last_event(&d.status),
            }),
        ))
    };
    respond(&req, r.await)
}

/// List messages, newest first, in Resend's list shape.
#[utoipa::path(get, path = "/emails", tag = "Resend", params(ResendListQuery),
    responses((status = 200, description = "{\"object\": \"list\", \"has_more\", \"data\"}", body = Object),
              (status = "4XX", body = ResendError, content_type = "application/json")),
    security(("bearer" = ["emails:read"])))]
pub async fn list(
    who: Result<Principal, AppError>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> HttpResponse {
    let r = async {
        let who = tenant_caller(who, Permission::EmailsRead)?;
        // Parsed here, not by the extractor, so a bad query string is
        // answered in Resend's error shape like every other refusal.
        let q = web::Query::<ResendListQuery>::from_query(req.query_string())
            .map_err(crate::http::query_error)?
            .into_inner();
        if q.before.is_some() {
            return Err(AppError::invalid(
                "before",
                "is not supported: page with after",
            ));
        }
        let cursor = match q.after.as_deref() {
            None => None,
            Some(id) => {
                let d = service::get(&state, &who, None, None, id)
                    .await
                    .map_err(|e| match e {
                        AppError::NotFound => AppError::invalid("after", "is not an email id"),
                        other => other,
                    })?;
                let c = Cursor {
                    created_at: d.created_at,
                    id: d.id,
                };
                Some(c.encode())
            }
        };
        let lq = service::ListQuery {
            limit: q.limit,
            cursor,
            ..Default::default()
        };
        let page = service::list(&state, &who, None, lq).await?;
        let data: Vec<Value> = page
            .data
            .iter()
            .map(|s| {
                json!({
                    "id": s.id, "from": s.from, "to": s.to, "subject": s.subject,
                    "created_at": s.created_at, "scheduled_at": s.scheduled_at,
                    "last_event": last_event(&s.status),
                })
            })
            .collect();
        let more = page.next_cursor.is_some();
        Ok((
            StatusCode::OK,
            json!({"object": "list", "has_more": more, "data": data}),
        ))
    };
    respond(&req, r.await)
}

/// Reschedule a scheduled message.
#[utoipa::path(patch, path = "/emails/{email}", tag = "Resend", request_body = ResendUpdate,
    params(("email" = Uuid, Path, description = "Message id")),
    responses((status = 200, description = "{\"object\": \"email\", \"id\"}", body = Object),
              (status = "4XX", body = ResendError, content_type = "application/json")),
    security(("bearer" = ["send"])))]
pub async fn update(
    who: Result<Principal, AppError>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody,
) -> HttpResponse {
    let r = async {
        let who = tenant_caller(who, Permission::Send)?;
        let b: ResendUpdate = body.parse().await?;
        if b.id.as_deref().is_some_and(|id| id != path.as_str()) {
            return Err(AppError::invalid("id", "must match the id in the path"));
        }
        let body = schedule::Reschedule {
            scheduled_at: b.scheduled_at,
        };
        let d = schedule::reschedule(&state, &who, None, None, &path, body).await?;
        Ok((StatusCode::OK, json!({"object": "email", "id": d.id})))
    };
    respond(&req, r.await)
}

/// Cancel a scheduled (or queued, deferred, held) message.
#[utoipa::path(post, path = "/emails/{email}/cancel", tag = "Resend",
    params(("email" = Uuid, Path, description = "Message id")),
    responses((status = 200, description = "{\"object\": \"email\", \"id\"}", body = Object),
              (status = "4XX", body = ResendError, content_type = "application/json")),
    security(("bearer" = ["send"])))]
pub async fn cancel(
    who: Result<Principal, AppError>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let r = async {
        let who = tenant_caller(who, Permission::Send)?;
        let d = schedule::cancel(&state, &who, None, None, &path).await?;
        Ok((StatusCode::OK, json!({"object": "email", "id": d.id})))
    };
    respond(&req, r.await)
}
