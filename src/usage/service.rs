//! Usage reports: a period (a UTC month) is the sum of its days.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{self, Counters};
use super::streams::{self, StreamCounters};
use crate::auth::Principal;
use crate::db;
use crate::db::pagination::{Page, PageQuery};
use crate::domain::Permission;
use crate::emails::stream::Stream;
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::tenants::model::{self as tenants_db, TenantRef, TenantRow};

/// The period of one tenant's usage.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeriodQuery {
    /// A UTC month, YYYY-MM (the current month when neither it nor from/to is given).
    pub period: Option<String>,
    /// First day, YYYY-MM-DD, instead of period (with to; default: the first of this month).
    pub from: Option<String>,
    /// Last day, YYYY-MM-DD, at most 366 days after from (default: today).
    pub to: Option<String>,
    /// Only this stream's messages: transactional or broadcast (its usage
    /// then carries the counters kept by stream only).
    pub stream: Option<Stream>,
}

/// The billing listing: a period and a page of tenants.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// A UTC month, YYYY-MM (the current month when neither it nor from/to is given).
    pub period: Option<String>,
    /// First day, YYYY-MM-DD, instead of period (with to; default: the first of this month).
    pub from: Option<String>,
    /// Last day, YYYY-MM-DD, at most 366 days after from (default: today).
    pub to: Option<String>,
    /// Only this stream's messages: transactional or broadcast (its usage
    /// then carries the counters kept by stream only).
    pub stream: Option<Stream>,
    /// Admin keys: tenants per page, 1-100, default 20 (tenant keys get their own usage object).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Admin keys: next_cursor of the previous page.
    pub cursor: Option<String>,
}

impl UsageQuery {
    fn period(&self) -> PeriodQuery {
        PeriodQuery {
            period: self.period.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            stream: self.stream,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Range {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DayView {
    pub date: NaiveDate,
    #[serde(flatten)]
    pub counters: Counters,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageView {
    pub tenant_id: Uuid,
    pub external_tenant_id: Option<String>,
    pub period: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    #[serde(flatten)]
    pub totals: Counters,
    pub daily: Vec<DayView>,
}

/// One stream's day: the counters kept by stream.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StreamDayView {
    pub date: NaiveDate,
    #[serde(flatten)]
    pub counters: StreamCounters,
}

/// One stream's usage (`?stream=`): the counters of that stream's messages.
/// API requests, ingest suppressions, opens and clicks belong to no stream
/// and are absent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StreamUsageView {
    pub tenant_id: Uuid,
    pub external_tenant_id: Option<String>,
    pub period: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub stream: Stream,
    #[serde(flatten)]
    pub totals: StreamCounters,
    pub daily: Vec<StreamDayView>,
}

fn parse_date(field: &str, s: &str) -> AppResult<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| AppError::invalid(field, "must be a date YYYY-MM-DD"))
}

fn month(s: &str) -> AppResult<Range> {
    let bad = || AppError::invalid("period", "must be a month YYYY-MM");
    let first = NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").map_err(|_| bad())?;
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(bad)?;
    Ok(Range {
        from: first,
        to: next.pred_opt().ok_or_else(bad)?,
    })
}

impl PeriodQuery {
    /// `period=YYYY-MM`, or `from`/`to` dates; the current UTC month by default.
    pub fn range(&self) -> AppResult<(String, Range)> {
        match (&self.period, &self.from, &self.to) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                Err(AppError::invalid("period", "give either period or from/to"))
            }
            (Some(p), None, None) => Ok((p.clone(), month(p)?)),
            (None, None, None) => {
                let today = Utc::now().date_naive();
                let p = format!("{:04}-{:02}", today.year(), today.month());
                Ok((p.clone(), month(&p)?))
            }
            (None, from, to) => {
                let today = Utc::now().date_naive();
                let from = match from {
                    Some(f) => parse_date("from", f)?,
                    None => today.with_day(1).unwrap_or(today),
                };
                let to = match to {
                    Some(t) => parse_date("to", t)?,
                    None => today,
                };
                if to < from || (to - from).num_days() > 366 {
                    return Err(AppError::invalid(
                        "to",
                        "must be on or after from, at most 366 days later",
                    ));
                }
                Ok((format!("{from}..{to}"), Range { from, to }))
            }
        }
    }
}

fn view(t: &TenantRow, period: &str, range: Range, days: Vec<model::DayRow>) -> UsageView {
    let mut totals = Counters::default();
    let daily = days
        .into_iter()
        .map(|d| {
            totals.add(&d.counters);
            DayView {
                date: d.day,
                counters: d.counters,
            }
        })
        .collect();
    UsageView {
        tenant_id: t.id,
        external_tenant_id: t.external_id.clone(),
        period: period.to_string(),
        from: range.from,
        to: range.to,
        totals,
        daily,
    }
}

fn stream_view(
    t: &TenantRow,
    period: &str,
    range: Range,
    stream: Stream,
    days: Vec<(Uuid, NaiveDate, StreamCounters)>,
) -> StreamUsageView {
    let mut totals = StreamCounters::default();
    let daily = days
        .into_iter()
        .map(|(_, date, counters)| {
            totals.add(&counters);
            StreamDayView { date, counters }
        })
        .collect();
    StreamUsageView {
        tenant_id: t.id,
        external_tenant_id: t.external_id.clone(),
        period: period.to_string(),
        from: range.from,
        to: range.to,
        stream,
        totals,
        daily,
    }
}

/// A tenant by reference, a deleted one by its id.
fn find_tenant(conn: &mut diesel::PgConnection, r: &TenantRef) -> AppResult<TenantRow> {
    match tenants_db::find(conn, r, false)? {
        Some(t) => Ok(t),
        None => match r {
            TenantRef::Id(id) => {
                tenants_db::find_any(conn, crate::domain::TenantId(*id))?.ok_or(AppError::NotFound)
            }
            TenantRef::External(_) => Err(AppError::NotFound),
        },
    }
}

/// One tenant's usage (every stream); a deleted tenant's stays readable by its id.
pub async fn for_tenant(state: &AppState, r: TenantRef, q: &PeriodQuery) -> AppResult<UsageView> {
    let (period, range) = q.range()?;
    db::run(&state.pool, move |conn| {
        let t = find_tenant(conn, &r)?;
        let days = model::days(conn, &[t.id], range.from, range.to)?;
        Ok(view(&t, &period, range, days))
    })
    .await
}

/// One tenant's usage of one stream.
pub async fn for_tenant_stream(
    state: &AppState,
    r: TenantRef,
    q: &PeriodQuery,
    stream: Stream,
) -> AppResult<StreamUsageView> {
    let (period, range) = q.range()?;
    db::run(&state.pool, move |conn| {
        let t = find_tenant(conn, &r)?;
        let days = streams::days(conn, &[t.id], stream, range.from, range.to)?;
        Ok(stream_view(&t, &period, range, stream, days))
    })
    .await
}

/// `GET /v1/tenants/{id}/usage`: every stream's usage, or with `stream`
/// that stream's.
pub async fn report(
    state: &AppState,
    r: TenantRef,
    q: &PeriodQuery,
) -> AppResult<serde_json::Value> {
    let json = match q.stream {
        Some(s) => serde_json::to_value(for_tenant_stream(state, r, q, s).await?),
        None => serde_json::to_value(for_tenant(state, r, q).await?),
    };
    json.map_err(|e| AppError::internal("usage", e))
}

/// `GET /v1/usage`: a tenant key reads its own; an admin key pages through
/// every tenant that is live or had usage in the period (the billing call).
pub async fn list(
    state: &AppState,
    who: &Principal,
    q: UsageQuery,
) -> AppResult<serde_json::Value> {
    who.require(Permission::UsageRead)?;
    if let Some(own) = who.tenant() {
        return report(state, TenantRef::Id(own.0), &q.period()).await;
    }
    let (period, range) = q.period().range()?;
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    }
    .validate()?;
    if let Some(stream) = q.stream {
        let (tenants, days) = db::run(&state.pool, move |conn| {
            let tenants = tenants_db::list_for_usage(conn, page, range.from, range.to)?;
            let ids: Vec<Uuid> = tenants.iter().map(|t| t.id).collect();
            let days = streams::days(conn, &ids, stream, range.from, range.to)?;
            Ok((tenants, days))
        })
        .await?;
        let mut by_tenant: BTreeMap<Uuid, Vec<_>> = BTreeMap::new();
        for d in days {
            by_tenant.entry(d.0).or_default().push(d);
        }
        let page = Page::from_rows(tenants, page, TenantRow::position, |t| {
            let days = by_tenant.remove(&t.id).unwrap_or_default();
            stream_view(&t, &period, range, stream, days)
        });
        return serde_json::to_value(page).map_err(|e| AppError::internal("usage", e));
    }
    let (tenants, days) = db::run(&state.pool, move |conn| {
        let tenants = tenants_db::list_for_usage(conn, page, range.from, range.to)?;
        let ids: Vec<Uuid> = tenants.iter().map(|t| t.id).collect();
        let days = model::days(conn, &ids, range.from, range.to)?;
        Ok((tenants, days))
    })
    .await?;
    let mut by_tenant: BTreeMap<Uuid, Vec<model::DayRow>> = BTreeMap::new();
    for d in days {
        by_tenant.entry(d.tenant_id).or_default().push(d);
    }
    let page = Page::from_rows(tenants, page, TenantRow::position, |t| {
        let days = by_tenant.remove(&t.id).unwrap_or_default();
        view(&t, &period, range, days)
    });
    serde_json::to_value(page).map_err(|e| AppError::internal("usage", e))
}
