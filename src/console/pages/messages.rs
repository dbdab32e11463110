//! Messages: the filtered, keyset-paginated list and one message's page
//! (per-recipient timeline, SMTP replies, headers, text, and its HTML in a
//! sandboxed frame served with `Content-Security-Policy: sandbox`).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use chrono::{Days, NaiveDate};
use serde::Deserialize;
use uuid::Uuid;

use super::message_view as view;
use crate::console::render::{html, page};
use crate::console::session::ConsoleResult;
use crate::console::users::ConsoleUser;
use crate::console::{tenant_for, Layout, TenantQuery};
use crate::db::{self, pagination::Cursor};
use crate::domain::{Permission, TenantId};
use crate::emails::service::{self, ListQuery, STATUSES};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    pub tenant: Option<String>,
    pub status: Option<String>,
    pub recipient: Option<String>,
    pub tag: Option<String>,
    /// YYYY-MM-DD: messages created on that day or before.
    pub date: Option<String>,
    pub cursor: Option<String>,
}

fn blank(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// "On or before a day" is a keyset position: the first row before the
/// next day's midnight, so the listing's own cursor serves it.
fn date_cursor(date: &str) -> AppResult<String> {
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| AppError::invalid("date", "must be a date YYYY-MM-DD"))?;
    let next = day
        .checked_add_days(Days::new(1))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .ok_or_else(|| AppError::invalid("date", "out of range"))?;
    Ok(Cursor {
        created_at: next.and_utc(),
        id: Uuid::nil(),
    }
    .encode())
}

pub async fn list(
    user: ConsoleUser,
    state: web::Data<AppState>,
    q: web::Query<Filters>,
) -> ConsoleResult<HttpResponse> {
    user.who.require(Permission::EmailsRead)?;
    let f = q.into_inner();
    let tenant = tenant_for(&state, &user, f.tenant.as_deref()).await?;
    let date = blank(&f.date);
    let cursor = match (blank(&f.cursor), &date) {
        (Some(c), _) => Some(c),
        (None, Some(d)) => Some(date_cursor(d)?),
        (None, None) => None,
    };
    let query = ListQuery {
        limit: Some(50),
        cursor,
        status: blank(&f.status),
        tag: blank(&f.tag),
        recipient: blank(&f.recipient),
        stream: None,
        tenant_id: if user.is_admin() {
            tenant.map(|t| t.0.to_string())
        } else {
            None
        },
    };
    let messages = service::list(&state, &user.who, None, query).await?;
    let rows = list_rows(&state, &messages.data).await?;
    let filters = Filters {
        tenant: tenant.map(|t| t.0.to_string()),
        date,
        cursor: None,
        ..f
    };
    Ok(page(
        "messages.html",
        ctx! {
            layout => Layout::new(&state, &user, tenant, "messages").await,
            messages, rows, statuses => STATUSES,
            status => filters.status, recipient => filters.recipient,
            tag => filters.tag, date => filters.date,
        },
    )?)
}

/// What the list shows beside each summary: its To cell (Cc/Bcc when To is
/// empty) and its tenant's name. One bounded read of the page's (≤ 50)
/// messages' recipients, only for those without To, and one of the names.
async fn list_rows(
    state: &AppState,
    data: &[crate::emails::view::EmailSummary],
) -> AppResult<Vec<serde_json::Value>> {
    let blank: Vec<(Uuid, Uuid)> = data
        .iter()
        .filter(|m| m.to.is_empty())
        .map(|m| (m.tenant_id, m.id))
        .collect();
    let mut tenants: Vec<Uuid> = data.iter().map(|m| m.tenant_id).collect();
    tenants.sort();
    tenants.dedup();
    let (recipients, names) = db::run(&state.pool, move |conn| {
        Ok((
            crate::bounces::recipients::of_emails(conn, &blank)?,
            crate::console::overview_model::names(conn, &tenants)?,
        ))
    })
    .await?;
    let names = view::names(names);
    Ok(data
        .iter()
        .map(|m| {
            let mine: Vec<_> = recipients
                .iter()
                .filter(|r| r.email_id == m.id && r.tenant_id == m.tenant_id)
                .collect();
            serde_json::json!({
                "to": view::shown_to(&m.to, &mine),
                "tenant_name": names.get(&m.tenant_id.to_string()),
            })
        })
        .collect())
}

/// The message (through the emails service: its tenant rules) and then its
/// stored content, for the page.
async fn load(
    state: &AppState,
    user: &ConsoleUser,
    tenant: Option<&str>,
    id: &str,
) -> AppResult<(crate::emails::view::EmailDetail, Content)> {
    user.who.require(Permission::EmailsRead)?;
    let tenant_id = tenant_for(state, user, tenant).await?;
    let asked = if user.is_admin() {
        Some(tenant_id.ok_or(AppError::NotFound)?.0.to_string())
    } else {
        None
    };
    let detail = service::get(state, &user.who, None, asked.as_deref(), id).await?;
    let content = content(state, TenantId(detail.tenant_id), detail.id).await?;
    Ok((detail, content))
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Content {
    pub text: Option<String>,
    pub html: Option<String>,
    /// Header rows: a raw (SMTP) message's own, else the custom ones.
    pub headers: Vec<(String, String)>,
    pub envelope_from: String,
}

async fn content(state: &AppState, tenant: TenantId, id: Uuid) -> AppResult<Content> {
    db::run(&state.pool, move |conn| {
        let row = crate::emails::model::find(conn, tenant, id)?.ok_or(AppError::NotFound)?;
        Ok(Content {
            text: row.text_body,
            html: row.html_body,
            headers: match &row.raw_message {
                Some(raw) => view::raw_headers(raw),
                None => view::custom_headers(&row.headers),
            },
            envelope_from: row.envelope_from,
        })
    })
    .await
}

pub async fn show(
    user: ConsoleUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: web::Query<TenantQuery>,
) -> ConsoleResult<HttpResponse> {
    let (message, content) = load(&state, &user, q.tenant.as_deref(), &path).await?;
    let tenant = TenantId(message.tenant_id);
    let has_html = content.html.is_some();
    let events = view::events(&message.events);
    let bcc = view::of_kind(&message, "bcc");
    let layout = Layout::new(&state, &user, Some(tenant), "messages").await;
    Ok(page(
        "message.html",
        ctx! {
            layout,
            message, text => content.text, headers => content.headers, events, bcc,
            envelope_from => content.envelope_from, has_html,
        },
    )?)
}

/// The message's HTML alone, for the page's `<iframe sandbox>`: the CSP
/// `sandbox` directive gives it an opaque origin and no script, and nothing
/// may load from anywhere (images only as data: URLs).
pub async fn html_body(
    user: ConsoleUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: web::Query<TenantQuery>,
) -> ConsoleResult<HttpResponse> {
    let (_, content) = load(&state, &user, q.tenant.as_deref(), &path).await?;
    let body = content.html.ok_or(AppError::NotFound)?;
    let mut resp = html(StatusCode::OK, body);
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'",
        ),
    );
    resp.headers_mut().insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("SAMEORIGIN"),
    );
    Ok(resp)
}
