//! Usage per day of a tenant as a server-rendered SVG chart and a table.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::pick;
use crate::console::charts::{bars, Layout as Bars, Series};
use crate::console::render::page;
use crate::console::session::ConsoleResult;
use crate::console::users::ConsoleUser;
use crate::console::{tenant_for, Layout};
use crate::domain::Permission;
use crate::emails::stream::Stream;
use crate::state::AppState;
use crate::tenants::model::TenantRef;
use crate::usage::model::Counters;
use crate::usage::service::{self, PeriodQuery, StreamUsageView, UsageView};
use crate::usage::streams::StreamCounters;

/// One stream's usage in the page's shape: the counters that belong to no
/// stream stay zero, and the page does not show them.
fn as_usage(v: StreamUsageView) -> UsageView {
    let counters = |c: StreamCounters| Counters {
        emails_sent: c.emails_sent,
        emails_delivered: c.emails_delivered,
        emails_bounced: c.emails_bounced,
        emails_failed: c.emails_failed,
        emails_complained: c.emails_complained,
        emails_unsubscribed: c.emails_unsubscribed,
        ..Counters::default()
    };
    UsageView {
        tenant_id: v.tenant_id,
        external_tenant_id: v.external_tenant_id,
        period: v.period,
        from: v.from,
        to: v.to,
        totals: counters(v.totals),
        daily: v
            .daily
            .into_iter()
            .map(|d| service::DayView {
                date: d.date,
                counters: counters(d.counters),
            })
            .collect(),
    }
}

#[derive(Deserialize)]
pub struct UsageQuery {
    pub tenant: Option<String>,
    /// YYYY-MM (default: this month).
    pub period: Option<String>,
    /// transactional or broadcast (empty: every stream).
    pub stream: Option<String>,
}

pub async fn show(
    user: ConsoleUser,
    state: web::Data<AppState>,
    q: web::Query<UsageQuery>,
) -> ConsoleResult<HttpResponse> {
    user.who.require(Permission::UsageRead)?;
    let q = q.into_inner();
    let Some(tenant) = tenant_for(&state, &user, q.tenant.as_deref()).await? else {
        return pick(&state, &user, "usage").await;
    };
    let period = q.period.filter(|p| !p.trim().is_empty());
    let stream = match q.stream.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(
            Stream::parse(s)
                .ok_or_else(|| crate::error::AppError::invalid("stream", Stream::EXPECTED))?,
        ),
    };
    let pq = PeriodQuery {
        period: period.clone(),
        from: None,
        to: None,
        stream,
    };
    let usage = match stream {
        None => service::for_tenant(&state, TenantRef::Id(tenant.0), &pq).await?,
        Some(s) => {
            let v = service::for_tenant_stream(&state, TenantRef::Id(tenant.0), &pq, s).await?;
            as_usage(v)
        }
    };
    // Every day of the period up to today, days without mail at zero (a
    // period is at most 366 days: the usage service bounds it).
    let today = chrono::Utc::now().date_naive();
    let days: Vec<_> = usage
        .from
        .iter_days()
        .take_while(|d| *d <= usage.to && *d <= today)
        .take(crate::console::charts::MAX_GROUPS)
        .collect();
    let of = |f: fn(&Counters) -> i64| -> Vec<i64> {
        days.iter()
            .map(|day| {
                usage
                    .daily
                    .iter()
                    .find(|d| d.date == *day)
                    .map_or(0, |d| f(&d.counters))
            })
            .collect()
    };
    let labels: Vec<String> = days
        .iter()
        .map(|d| d.format("%-d %b").to_string())
        .collect();
    let chart = bars(
        &format!(
            "Messages per day from {} to {}: accepted, delivered, bounced",
            usage.from, usage.to
        ),
        &labels,
        &[
            Series {
                name: "Accepted",
                class: "s-accepted",
                values: of(|c| c.emails_sent),
            },
            Series {
                name: "Delivered",
                class: "s-delivered",
                values: of(|c| c.emails_delivered),
            },
            Series {
                name: "Bounced",
                class: "s-bounced",
                values: of(|c| c.emails_bounced),
            },
        ],
        Bars::Grouped,
    );
    // The month field shows the month on screen (this one by default).
    let period = Some(usage.period.clone());
    Ok(page(
        "usage.html",
        ctx! {
            layout => Layout::new(&state, &user, Some(tenant), "usage").await,
            usage, period, chart, stream => stream.map(Stream::as_str),
        },
    )?)
}
