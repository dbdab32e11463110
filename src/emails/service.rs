//! Sending and reading mail. A send resolves the tenant (from the key, the
//! path, or the body for platform-style admin calls), validates every message,
//! then queues them durably: coalesced with concurrent sends, or in their own
//! transaction when an Idempotency-Key must be honoured.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use chrono::{Duration as ChronoDuration, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::idempotency;
use super::input::{BatchRequest, SendRequest, SenderProfile, MAX_BATCH};
use super::model::{self, EmailSummaryRow, ListFilter, NewEmail};
use super::size::SizeLimits;
use super::view::{Accepted, BatchAccepted, EmailDetail, EmailSummary};
use crate::auth::Principal;
use crate::db;
use crate::db::pagination::{Page, PageQuery};
use crate::domain::{Permission, TenantId};
use crate::error::{AppError, AppResult, FieldError};
use crate::queue::ingest::Submission;
use crate::state::AppState;
use crate::templates;
use crate::templates::input::variables;
use crate::templates::render::Rendered;
use crate::tenants::model::{TenantRef, TenantRow};

/// A response to replay: status code and JSON body.
pub type Reply = (StatusCode, serde_json::Value);

pub const STATUSES: &[&str] = &[
    "scheduled",
    "queued",
    "sending",
    "deferred",
    "delivered",
    "bounced",
    "failed",
    "canceled",
    "held",
    "suppressed",
];

/// Which tenant a send or read is for, before lookup.
pub(super) fn target(
    who: &Principal,
    path: Option<&str>,
    body: Option<&str>,
    field: &str,
) -> AppResult<TenantRef> {
    match (who.tenant(), path, body) {
        (Some(_), _, Some(_)) => Err(AppError::invalid(field, "is not allowed with a tenant key")),
        (Some(own), _, None) => Ok(TenantRef::Id(own.0)),
        (None, Some(_), Some(_)) => Err(AppError::invalid(
            field,
            "must not be given when the path names the tenant",
        )),
        (None, Some(p), None) => Ok(TenantRef::parse(p)),
        (None, None, Some(b)) => Ok(TenantRef::parse(b)),
        (None, None, None) => Err(AppError::invalid(field, "is required with an admin key")),
    }
}

/// Looks the tenant up (creating it for platform-style sends when
/// `tenants.auto_create` allows) and refuses suspended tenants.
pub(super) async fn sending_tenant(
    state: &AppState,
    who: &Principal,
    r: TenantRef,
) -> AppResult<Arc<TenantRow>> {
    let found = state.tenants.get(&r).await;
    let row = match (found, &r) {
        (Err(AppError::NotFound), TenantRef::External(ext))
            if who.is_admin() && state.settings.tenants.auto_create =>
        {
            let actor = crate::audit::Actor::key(who, None);
            crate::tenants::service::auto_create(state, &actor, ext).await?;
            state.tenants.get(&r).await?
        }
        (other, _) => other?,
    };
    if row.status == "suspended" {
        return Err(AppError::forbidden(
            "tenant_suspended",
            "This tenant is suspended.",
        ));
    }
    state.reputation.check(row.id)?;
    Ok(row)
}

fn profile(t: &TenantRow) -> SenderProfile {
    let text = |k: &str| {
        t.settings
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    SenderProfile {
        from_name: text("from_name"),
        reply_to: text("reply_to"),
    }
}

fn to_row(
    state: &AppState,
    tenant: &TenantRow,
    v: super::input::ValidEmail,
) -> AppResult<NewEmail> {
    let id = Uuid::new_v4();
    let now = Utc::now();
    let lifetime = ChronoDuration::seconds(
        i64::try_from(state.settings.delivery.max_lifetime_secs).unwrap_or(i64::MAX / 2),
    );
    // The Message-ID is on the sending (From) domain, which DKIM signs for.
    let domain = v.from_domain.clone();
    let json = |r: Result<serde_json::Value, serde_json::Error>| {
        r.map_err(|e| AppError::internal("serialising message", e))
    };
    // A scheduled message's lifetime starts when it may first be sent.
    let start = v.scheduled_at.unwrap_or(now);
    Ok(NewEmail {
        tenant_id: tenant.id,
        id,
        status: if v.scheduled_at.is_some() {
            "scheduled"
        } else {
            "queued"
        }
        .into(),
        scheduled_at: v.scheduled_at,
        stream: v.stream.as_str().into(),
        unsubscribe: v.unsubscribe,
        expires_at: start + lifetime,
        message_id: format!("<{}@{}>", id.simple(), domain),
        from_addr: v.from,
        envelope_from: v.envelope_from,
        to_addrs: v.to,
        cc_addrs: v.cc,
        bcc_addrs: v.bcc,
        reply_to: v.reply_to,
        subject: v.subject,
        text_body: v.text,
        html_body: v.html,
        headers: json(serde_json::to_value(v.headers))?,
        attachments: json(serde_json::to_value(v.attachments))?,
        tags: json(serde_json::to_value(v.tags))?,
        created_at: now,
        raw_message: None,
        track: crate::tracking::resolve(v.track, &tenant.settings),
    })
}

/// Names the failing message of a batch in the detail (field names already
/// carry the `emails[i].` prefix).
/// A batch message's error names its message once: a detail that starts
/// with its path already (`emails[1].to[0]: ...`) is left as it is.
fn at_index(e: AppError, i: usize) -> AppError {
    let prefix = format!("emails[{i}]");
    match e {
        AppError::Validation {
            code,
            detail,
            errors,
        } => AppError::Validation {
            code,
            detail: match detail.starts_with(&prefix) {
                true => detail,
                false => format!("{prefix}: {detail}"),
            },
            errors,
        },
        other => other,
    }
}

/// What the messages of one request add up to while they are prepared.
#[derive(Default)]
pub(super) struct Accumulated {
    /// The daily quota of each tenant sent to.
    pub(super) quotas: BTreeMap<Uuid, i64>,
    /// Template output rendered so far.
    rendered_bytes: usize,
}

impl Accumulated {
    /// Counts a rendered template against the request's budget: in total a
    /// request's templates may render no more than the request itself could
    /// carry (`limits.max_request_bytes`), so a 100-message batch of small
    /// sends cannot make hundreds of megabytes of bodies in memory.
    fn take_rendered(&mut self, r: &Rendered, budget: usize, prefix: &str) -> AppResult<()> {
        let n = r.subject.len()
            + r.html.as_ref().map_or(0, String::len)
            + r.text.as_ref().map_or(0, String::len);
        self.rendered_bytes = self.rendered_bytes.saturating_add(n);
        if self.rendered_bytes <= budget {
            return Ok(());
        }
        Err(AppError::Validation {
            code: "message_too_large",
            detail: format!(
                "The request's templates render more than {budget} bytes in total                  (limits.max_request_bytes)."
            ),
            errors: vec![FieldError::new(
                format!("{prefix}template"),
                format!("rendered output exceeds {budget} bytes for this request"),
            )],
        })
    }
}

pub(super) async fn prepare(
    state: &AppState,
    who: &Principal,
    path: Option<&str>,
    mut req: SendRequest,
    prefix: &str,
    acc: &mut Accumulated,
) -> AppResult<NewEmail> {
    let field = format!("{prefix}tenant_id");
    let tenant = sending_tenant(
        state,
        who,
        target(who, path, req.tenant_id.as_deref(), &field)?,
    )
    .await?;
    let req = match req.template.clone() {
        Some(name) => {
            let vars = variables(&format!("{prefix}variables"), req.variables.take())?;
            let rendered = templates::service::render_for_send(
                state,
                TenantId(tenant.id),
                &name,
                vars,
                prefix,
            )
            .await?;
            acc.take_rendered(&rendered, state.settings.limits.max_request_bytes, prefix)?;
            req.with_rendered(rendered)
        }
        None => req,
    };
    let limits = SizeLimits::from(&state.settings.limits);
    let valid = req.validate(&profile(&tenant), prefix, &limits)?;
    state
        .domains
        .rule
        .check(
            TenantId(tenant.id),
            &valid.from_domain,
            &format!("{prefix}from"),
        )
        .await?;
    if let Some(limit) = tenant.emails_per_day {
        acc.quotas.insert(tenant.id, i64::from(limit));
    }
    to_row(state, &tenant, valid)
}

pub(super) fn check_idempotency_key(key: &str) -> AppResult<()> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(AppError::invalid(
            "Idempotency-Key",
            "must be 1-255 printable ASCII characters",
        ));
    }
    Ok(())
}

/// Queues `rows` and returns `reply`; with an idempotency key the first reply
/// of that key is replayed instead, and a different body is a 409.
pub(super) async fn enqueue(
    state: &AppState,
    submission: Submission,
    reply: Reply,
    idem: Option<(idempotency::Scope, String, Vec<u8>)>,
) -> AppResult<Reply> {
    let Some((scope, key, hash)) = idem else {
        state.ingest.submit(submission).await?;
        return Ok(reply);
    };
    let (status, body) = reply;
    let ingest = state.ingest.clone();
    let (reply, fresh) = db::run(&state.pool, move |conn| {
        ingest.write_alone(conn, &submission, |conn, write| {
            if idempotency::claim(conn, scope, &key, &hash, i32::from(status.as_u16()), &body)? {
                // Refused by the quota: roll the key back too, so the same
                // request can succeed once the quota allows it.
                write(conn)?;
                return Ok(((status, body.clone()), true));
            }
            let stored = idempotency::find(conn, scope, &key)?
                .ok_or_else(|| AppError::internal("idempotency", "entry vanished"))?;
            if stored.request_hash != hash {
                return Err(AppError::Conflict {
                    code: "idempotency_key_reused",
                    detail: "This Idempotency-Key was used with a different request body.".into(),
                });
            }
            let code = u16::try_from(stored.status_code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::ACCEPTED);
            Ok(((code, stored.response), false))
        })
    })
    .await?;
    if fresh {
        state.ingest.mark_committed();
    }
    Ok(reply)
}

pub(super) fn request_hash(kind: &str, body: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().to_vec()
}

/// `POST /v1/emails` and `POST /v1/tenants/{id}/emails`.
pub async fn send_one(
    state: &AppState,
    who: &Principal,
    path: Option<&str>,
    body: &[u8],
    idem_key: Option<String>,
) -> AppResult<Reply> {
    who.require(Permission::Send)?;
    let req: SendRequest = crate::body::parse_json(body)?;
    let mut acc = Accumulated::default();
    let row = prepare(state, who, path, req, "", &mut acc).await?;
    let reply = (
        StatusCode::ACCEPTED,
        serde_json::to_value(Accepted::of(&row)).unwrap_or_default(),
    );
    let idem = match idem_key {
        Some(k) => {
            check_idempotency_key(&k)?;
            Some((
                idempotency::Scope::Tenant(row.tenant_id),
                k,
                request_hash("single", body),
            ))
        }
        None => None,
    };
    let submission = Submission {
        rows: vec![row],
        quotas: acc.quotas,
    };
    enqueue(state, submission, reply, idem).await
}

/// `POST /v1/emails/batch`: every message is validated before any is queued.
pub async fn send_batch(
    state: &AppState,
    who: &Principal,
    body: &[u8],
    idem_key: Option<String>,
) -> AppResult<Reply> {
    send_batch_up_to(state, who, body, idem_key, MAX_BATCH).await
}

/// [`send_batch`] with another size bound.
pub async fn send_batch_up_to(
    state: &AppState,
    who: &Principal,
    body: &[u8],
    idem_key: Option<String>,
    max: usize,
) -> AppResult<Reply> {
    who.require(Permission::Send)?;
    let batch: BatchRequest =
        crate::body::errors::parse_json_object(body, r#"send {"emails": [...]}"#)?;
    if batch.emails.is_empty() || batch.emails.len() > max {
        return Err(AppError::invalid(
            "emails",
            format!("must hold 1 to {max} messages"),
        ));
    }
    let mut rows = Vec::with_capacity(batch.emails.len());
    let mut acc = Accumulated::default();
    for (i, req) in batch.emails.into_iter().enumerate() {
        rows.push(
            prepare(state, who, None, req, &format!("emails[{i}]."), &mut acc)
                .await
                .map_err(|e| at_index(e, i))?,
        );
    }
    let data: Vec<Accepted> = rows.iter().map(Accepted::of).collect();
    let reply = (
        StatusCode::ACCEPTED,
        serde_json::to_value(BatchAccepted { data }).unwrap_or_default(),
    );
    let idem = match idem_key {
        Some(k) => {
            check_idempotency_key(&k)?;
            let first = rows[0].tenant_id;
            // One tenant: scope by tenant; a platform batch across tenants: by the admin key.
            let scope = if rows.iter().all(|r| r.tenant_id == first) {
                idempotency::Scope::Tenant(first)
            } else {
                idempotency::Scope::Platform(who.0.api_key_id)
            };
            Some((scope, k, request_hash("batch", body)))
        }
        None => None,
    };
    let quotas = acc.quotas;
    enqueue(state, Submission { rows, quotas }, reply, idem).await
}

/// The tenant whose mail is read: a tenant key's own, the path's, or the
/// admin's `?tenant_id=` (None = every tenant, admins only).
async fn reading_tenant(
    state: &AppState,
    who: &Principal,
    path: Option<&str>,
    query: Option<&str>,
) -> AppResult<Option<TenantId>> {
    who.require(Permission::EmailsRead)?;
    if who.tenant().is_none() && path.is_none() && query.is_none() {
        return Ok(None);
    }
    let r = target(who, path, query, "tenant_id")?;
    if let Some(own) = who.tenant() {
        return Ok(Some(own));
    }
    let row = state.tenants.get(&r).await?;
    Ok(Some(TenantId(row.id)))
}

/// `GET /v1/emails`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Messages per page, 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// next_cursor of the previous page.
    pub cursor: Option<String>,
    /// Only messages in this status: scheduled, queued, sending, deferred, held, delivered, bounced, failed, canceled or suppressed.
    pub status: Option<String>,
    /// Only messages with this tag: key (any value) or key:value.
    pub tag: Option<String>,
    /// Messages to this address (exact, case-insensitive).
    pub recipient: Option<String>,
    /// Only messages of this stream: transactional or broadcast.
    pub stream: Option<super::stream::Stream>,
    /// Admin keys: only this tenant's messages (id or external_id); without it, every tenant's.
    pub tenant_id: Option<String>,
}

/// `GET /v1/tenants/{tenant}/emails`: the tenant is the path's.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantListQuery {
    /// Messages per page, 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// next_cursor of the previous page.
    pub cursor: Option<String>,
    /// Only messages in this status: scheduled, queued, sending, deferred, held, delivered, bounced, failed, canceled or suppressed.
    pub status: Option<String>,
    /// Only messages with this tag: key (any value) or key:value.
    pub tag: Option<String>,
    /// Messages to this address (exact, case-insensitive).
    pub recipient: Option<String>,
    /// Only messages of this stream: transactional or broadcast.
    pub stream: Option<super::stream::Stream>,
}

impl From<TenantListQuery> for ListQuery {
    fn from(q: TenantListQuery) -> Self {
        ListQuery {
            limit: q.limit,
            cursor: q.cursor,
            status: q.status,
            tag: q.tag,
            recipient: q.recipient,
            stream: q.stream,
            tenant_id: None,
        }
    }
}

pub async fn list(
    state: &AppState,
    who: &Principal,
    path: Option<&str>,
    q: ListQuery,
) -> AppResult<Page<EmailSummary>> {
    let tenant = reading_tenant(state, who, path, q.tenant_id.as_deref()).await?;
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .validate()?;
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(AppError::invalid(
                "status",
                format!("must be one of {}", STATUSES.join(", ")),
            ));
        }
    }
    // Postgres text cannot hold NUL; asking for it failed the query (500).
    if q.tag.as_deref().is_some_and(|t| t.contains('\0')) {
        return Err(AppError::invalid("tag", "must not contain NUL"));
    }
    let tag = q.tag.map(|t| match t.split_once(':') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => (t, None),
    });
    let recipient = q
        .recipient
        .as_deref()
        .map(|r| crate::domain::parse_email("recipient", r).map(|a| a.to_ascii_lowercase()))
        .transpose()?;
    let filter = ListFilter {
        tenant,
        status: q.status,
        tag,
        recipient,
        stream: q.stream.map(|s| s.as_str()),
    };
    let rows = db::run(&state.pool, move |conn| {
        Ok(model::list(conn, &filter, page)?)
    })
    .await?;
    Ok(Page::from_rows(
        rows,
        page,
        EmailSummaryRow::position,
        EmailSummary::from,
    ))
}

pub async fn get(
    state: &AppState,
    who: &Principal,
    path: Option<&str>,
    query: Option<&str>,
    id: &str,
) -> AppResult<EmailDetail> {
    let tenant = reading_tenant(state, who, path, query)
        .await?
        .ok_or_else(|| AppError::invalid("tenant_id", "is required with an admin key"))?;
    let id = Uuid::parse_str(id).map_err(|_| AppError::NotFound)?;
    db::run(&state.pool, move |conn| detail(conn, tenant, id)).await
}

/// A message with its stored content (bodies, Bcc), for the compat reads
/// that show them (Resend's `GET /emails/{id}`); a tenant key's own only.
pub async fn get_with_content(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> AppResult<(model::EmailRow, EmailDetail)> {
    let tenant = reading_tenant(state, who, None, None)
        .await?
        .ok_or_else(|| AppError::invalid("tenant_id", "is required with an admin key"))?;
    let id = Uuid::parse_str(id).map_err(|_| AppError::NotFound)?;
    db::run(&state.pool, move |conn| {
        let d = detail(conn, tenant, id)?;
        let row = model::find(conn, tenant, id)?.ok_or(AppError::NotFound)?;
        Ok((row, d))
    })
    .await
}

/// A message as `GET /v1/emails/{id}` shows it.
pub(super) fn detail(
    conn: &mut diesel::PgConnection,
    tenant: TenantId,
    id: Uuid,
) -> AppResult<EmailDetail> {
    let row = model::find(conn, tenant, id)?.ok_or(AppError::NotFound)?;
    let events = model::timeline(&row, model::events(conn, tenant, id)?);
    let queue = crate::queue::model::states(conn, tenant, &[id])?.pop();
    let recipients = crate::bounces::recipients::of_email(conn, tenant, id)?;
    let mut detail = EmailDetail::new(row, queue, events);
    detail.recipients = recipients.into_iter().map(Into::into).collect();
    Ok(detail)
}
