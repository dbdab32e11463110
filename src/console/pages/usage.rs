//! Usage per day of a tenant as a server-rendered SVG chart and a table.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::pick;
use crate::console::render::{bar_chart, page};
use crate::console::session::ConsoleResult;
use crate::console::users::ConsoleUser;
use crate::console::{tenant_for, Layout};
use crate::domain::Permission;
use crate::state::AppState;
use crate::tenants::model::TenantRef;
use crate::usage::service::{self, PeriodQuery};

#[derive(Deserialize)]
pub struct UsageQuery {
    pub tenant: Option<String>,
    /// YYYY-MM (default: this month).
    pub period: Option<String>,
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
    let usage = service::for_tenant(
        &state,
        TenantRef::Id(tenant.0),
        &PeriodQuery {
            period: period.clone(),
            from: None,
            to: None,
        },
    )
    .await?;
    // Every day of the period up to today, days without mail at zero (a
    // period is at most 366 days: the usage service bounds it).
    let today = chrono::Utc::now().date_naive();
    let sent: Vec<(String, i64)> = usage
        .from
        .iter_days()
        .take_while(|d| *d <= usage.to && *d <= today)
        .take(400)
        .map(|day| {
            let n = usage
                .daily
                .iter()
                .find(|d| d.date == day)
                .map_or(0, |d| d.counters.emails_sent);
            (day.to_string(), n)
        })
        .collect();
    let chart = bar_chart(&sent, "Messages accepted per day");
    Ok(page(
        "usage.html",
        ctx! {
            layout => Layout::new(&user, Some(tenant), "usage"),
            usage, period, chart,
        },
    )?)
}
