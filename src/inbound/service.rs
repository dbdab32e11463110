//! Routes and received mail for a resolved tenant: domain results, no HTTP
//! types. A route's match must be at one of the tenant's verified domains
//! (or a subdomain of one); a `webhook` route names one of the tenant's
//! endpoints. Route changes are audited (`inbound_route.created`,
//! `inbound_route.deleted`) in their transaction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::model::{self, Filter, RouteRow};
use super::parse::{self, AttachmentMeta};
use super::view::{ReceivedView, RouteView};
use crate::audit::{self, Actor};
use crate::db::pagination::{Page, PageRequest};
use crate::db::{self, PgPool};
use crate::domain::{parse_email, parse_hostname, TenantId};
use crate::error::{AppError, AppResult};

/// `POST /v1/inbound/routes` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoute {
    /// `support@acme.com` or `*@reply.acme.com`, at a verified domain.
    #[serde(rename = "match")]
    pub match_addr: String,
    /// `webhook`, `hold` or `reject`.
    pub action: String,
    /// One of the tenant's webhook endpoints (required for `webhook`).
    pub webhook_id: Option<String>,
    /// `postline` (default) or `postmark`: the `email.received` body.
    pub format: Option<String>,
}

/// `GET /v1/inbound` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only messages of this route.
    pub route_id: Option<String>,
    /// The sender (From header or envelope), exact.
    pub from: Option<String>,
    /// A recipient (envelope or To header), exact.
    pub to: Option<String>,
    /// Received after this instant (RFC 3339).
    pub after: Option<String>,
    /// Entries per page, 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// next_cursor of the previous page.
    pub cursor: Option<String>,
}

fn not_verified(domain: &str) -> AppError {
    AppError::Validation {
        code: "domain_not_verified",
        detail: format!("match: {domain} is not at one of this tenant's verified domains"),
        errors: vec![crate::error::FieldError::new(
            "match",
            format!("{domain} is not at a verified domain of this tenant"),
        )],
    }
}

/// `(local part or None for `*`, domain)`.
fn parse_match(raw: &str) -> AppResult<(Option<String>, String)> {
    let raw = raw.trim();
    if let Some(domain) = raw.strip_prefix("*@") {
        return Ok((None, parse_hostname("match", domain)?));
    }
    let addr = parse_email("match", raw)?.to_ascii_lowercase();
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return Err(AppError::invalid(
            "match",
            "expected an address or *@domain",
        ));
    };
    if local.contains('+') {
        return Err(AppError::invalid(
            "match",
            "must not contain '+': plus addressing reaches the address without it",
        ));
    }
    Ok((Some(local.to_string()), parse_hostname("match", domain)?))
}

fn parse_uuid(field: &str, raw: &str) -> AppResult<Uuid> {
    raw.parse()
        .map_err(|_| AppError::invalid(field, "is not a valid id"))
}

fn verified_at(conn: &mut PgConnection, t: TenantId, domain: &str) -> QueryResult<bool> {
    use crate::db::schema::domains;
    let names = crate::domains::sending::suffixes(domain);
    let n: i64 = domains::table
        .filter(domains::tenant_id.eq(t.0))
        .filter(domains::status.eq("verified"))
        .filter(domains::name.eq_any(names))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

fn endpoint_of(conn: &mut PgConnection, t: TenantId, id: Uuid) -> QueryResult<bool> {
    use crate::db::schema::webhooks as w;
    let n: i64 = w::table
        .filter(w::id.eq(id).and(w::tenant_id.eq(t.0)))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

pub async fn create_route(
    pool: &PgPool,
    actor: &Actor,
    t: TenantId,
    input: CreateRoute,
) -> AppResult<RouteView> {
    let (local, domain) = parse_match(&input.match_addr)?;
    if !["webhook", "hold", "reject"].contains(&input.action.as_str()) {
        return Err(AppError::invalid(
            "action",
            "must be webhook, hold or reject",
        ));
    }
    let format = input.format.unwrap_or_else(|| "postline".into());
    if !["postline", "postmark"].contains(&format.as_str()) {
        return Err(AppError::invalid("format", "must be postline or postmark"));
    }
    let webhook_id = match (&input.webhook_id, input.action.as_str()) {
        (Some(w), _) => Some(parse_uuid("webhook_id", w)?),
        (None, "webhook") => {
            return Err(AppError::invalid(
                "webhook_id",
                "is required for action webhook",
            ))
        }
        (None, _) => None,
    };
    let row = RouteRow {
        tenant_id: t.0,
        id: Uuid::new_v4(),
        match_addr: match &local {
            Some(l) => format!("{l}@{domain}"),
            None => format!("*@{domain}"),
        },
        domain,
        local_part: local,
        action: input.action,
        webhook_id,
        format,
        created_at: Utc::now(),
    };
    let actor = actor.clone();
    let saved = db::run(pool, move |conn| {
        conn.transaction(|conn| {
            if !verified_at(conn, t, &row.domain)? {
                return Err(not_verified(&row.domain));
            }
            if let Some(w) = row.webhook_id {
                if !endpoint_of(conn, t, w)? {
                    return Err(AppError::invalid("webhook_id", "no such webhook endpoint"));
                }
            }
            let saved = model::insert_route(conn, &row)?;
            audit::record(
                conn,
                &actor,
                "inbound_route.created",
                Some(t.0),
                saved.id,
                json!({"match": saved.match_addr, "action": saved.action}),
            )?;
            Ok(saved)
        })
    })
    .await?;
    Ok(saved.into())
}

pub async fn list_routes(
    pool: &PgPool,
    t: TenantId,
    page: PageRequest,
) -> AppResult<Page<RouteView>> {
    let rows = db::run(pool, move |conn| Ok(model::list_routes(conn, t, page)?)).await?;
    Ok(Page::from_rows(
        rows,
        page,
        RouteRow::position,
        RouteView::from,
    ))
}

pub async fn get_route(pool: &PgPool, t: TenantId, id: &str) -> AppResult<RouteView> {
    let id: Uuid = id.parse().map_err(|_| AppError::NotFound)?;
    let row = db::run(pool, move |conn| Ok(model::find_route(conn, t, id)?)).await?;
    row.map(RouteView::from).ok_or(AppError::NotFound)
}

pub async fn delete_route(pool: &PgPool, actor: &Actor, t: TenantId, id: &str) -> AppResult<()> {
    let id: Uuid = id.parse().map_err(|_| AppError::NotFound)?;
    let actor = actor.clone();
    db::run(pool, move |conn| {
        conn.transaction(|conn| {
            if model::delete_route(conn, t, id)? == 0 {
                return Err(AppError::NotFound);
            }
            audit::record(
                conn,
                &actor,
                "inbound_route.deleted",
                Some(t.0),
                id,
                json!({}),
            )?;
            Ok(())
        })
    })
    .await
}

fn filter_of(q: &ListQuery) -> AppResult<Filter> {
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(a) => Some(
            DateTime::parse_from_rfc3339(a)
                .map_err(|_| AppError::invalid("after", "expected an RFC 3339 instant"))?
                .with_timezone(&Utc),
        ),
    };
    let addr = |f: &str, v: &Option<String>| -> AppResult<Option<String>> {
        v.as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| parse_email(f, s).map(|a| a.to_ascii_lowercase()))
            .transpose()
    };
    Ok(Filter {
        route_id: q
            .route_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|r| parse_uuid("route_id", r))
            .transpose()?,
        from: addr("from", &q.from)?,
        to: addr("to", &q.to)?,
        after,
    })
}

pub async fn list(pool: &PgPool, t: TenantId, q: ListQuery) -> AppResult<Page<ReceivedView>> {
    let page = crate::db::pagination::PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    }
    .validate()?;
    let f = filter_of(&q)?;
    let (rows, statuses) = db::run(pool, move |conn| {
        let rows = model::list_messages(conn, t, &f, page)?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        Ok((rows, model::delivery_statuses(conn, t, &ids)?))
    })
    .await?;
    Ok(Page::from_rows(
        rows,
        page,
        model::MessageRow::position,
        |r| {
            let s = statuses
                .iter()
                .find(|(id, _)| *id == r.id)
                .map(|(_, s)| s.as_str());
            ReceivedView::new(r, s)
        },
    ))
}

pub async fn get(pool: &PgPool, t: TenantId, id: &str) -> AppResult<ReceivedView> {
    let id: Uuid = id.parse().map_err(|_| AppError::NotFound)?;
    let (row, statuses) = db::run(pool, move |conn| {
        let row = model::find_message(conn, t, id)?.ok_or(AppError::NotFound)?;
        Ok((row, model::delivery_statuses(conn, t, &[id])?))
    })
    .await?;
    let s = statuses.first().map(|(_, s)| s.as_str());
    Ok(ReceivedView::new(row, s))
}

fn purged() -> AppError {
    AppError::Conflict {
        code: "content_purged",
        detail: "this message's content was purged (retention.content_days)".into(),
    }
}

/// The message as received (`message/rfc822`).
pub async fn raw(pool: &PgPool, t: TenantId, id: &str) -> AppResult<Vec<u8>> {
    let id: Uuid = id.parse().map_err(|_| AppError::NotFound)?;
    let raw = db::run(pool, move |conn| Ok(model::raw_of(conn, t, id)?)).await?;
    raw.ok_or(AppError::NotFound)?.ok_or_else(purged)
}

/// One attachment, decoded, with its metadata.
pub async fn attachment(
    pool: &PgPool,
    t: TenantId,
    id: &str,
    index: &str,
) -> AppResult<(AttachmentMeta, Vec<u8>)> {
    let index: usize = index.parse().map_err(|_| AppError::NotFound)?;
    let raw = raw(pool, t, id).await?;
    tokio::task::spawn_blocking(move || parse::attachment(&raw, index))
        .await
        .map_err(|e| AppError::internal("attachment", e))?
        .ok_or(AppError::NotFound)
}
