//! A tenant's reputation (issue 25): status and reason, the policy, the
//! window's and 7 days' figures, per sending domain, and the 30 daily bounce
//! and complaint rates as SVG charts against the policy's thresholds.
//! Admins for any tenant; a tenant user for their own (another tenant's is
//! "not found", like an unknown one).

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::console::charts::{
    bars_with, millionths, percent, Layout as Bars, Marker, Series, Unit,
};
use crate::console::render::page;
use crate::console::session::ConsoleResult;
use crate::console::users::ConsoleUser;
use crate::console::{tenant_for, Layout};
use crate::domain::Permission;
use crate::error::AppError;
use crate::reputation::policy::Counts;
use crate::reputation::service;
use crate::reputation::view::ReputationView;
use crate::state::AppState;

/// One day of the table under the charts.
#[derive(Serialize)]
struct Day {
    day: String,
    delivered: i64,
    hard_bounced: i64,
    complained: i64,
    bounce_rate: f64,
    complaint_rate: f64,
}

pub async fn show(
    user: ConsoleUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ConsoleResult<HttpResponse> {
    if user.is_admin() {
        user.who.require_admin(Permission::TenantsRead)?;
    } else {
        user.who.require(Permission::UsageRead)?;
    }
    let id = tenant_for(&state, &user, Some(&path))
        .await?
        .ok_or(AppError::NotFound)?;
    let reputation = service::get(&state, id).await?;
    let (bounce_chart, complaint_chart) = charts(&reputation);
    let days: Vec<Day> = reputation
        .daily
        .iter()
        .rev()
        .filter(|d| d.delivered + d.hard_bounced + d.complained > 0)
        .map(|d| {
            let c = counts(d.delivered, d.hard_bounced, d.complained);
            Day {
                day: d.day.to_string(),
                delivered: d.delivered,
                hard_bounced: d.hard_bounced,
                complained: d.complained,
                bounce_rate: c.bounce_rate(),
                complaint_rate: c.complaint_rate(),
            }
        })
        .collect();
    Ok(page(
        "reputation.html",
        ctx! {
            layout => Layout::new(&state, &user, Some(id), "reputation").await,
            reputation, bounce_chart, complaint_chart, days,
        },
    )?)
}

fn counts(delivered: i64, hard_bounced: i64, complained: i64) -> Counts {
    Counts {
        delivered,
        hard_bounced,
        complained,
    }
}

/// The daily bounce and complaint rates (the policy's formulas: bounced of
/// delivered + bounced, complained of delivered) against the warning and
/// pause thresholds.
pub fn charts(r: &ReputationView) -> (String, String) {
    let labels: Vec<String> = r
        .daily
        .iter()
        .map(|d| d.day.format("%-d %b").to_string())
        .collect();
    let rate = |f: fn(&Counts) -> f64| -> Vec<i64> {
        r.daily
            .iter()
            .map(|d| millionths(f(&counts(d.delivered, d.hard_bounced, d.complained))))
            .collect()
    };
    let chart = |title: &str, name: &str, class: &str, values, warn: f64, pause: f64| {
        let (warn, pause) = (millionths(warn), millionths(pause));
        let (w, p) = (
            format!("Warning at {}", percent(warn)),
            format!("Pause at {}", percent(pause)),
        );
        bars_with(
            title,
            &labels,
            &[Series {
                name,
                class,
                values,
            }],
            Bars::Grouped,
            Unit::PerMillion,
            &[
                Marker {
                    name: &w,
                    class: "m-warning",
                    value: warn,
                },
                Marker {
                    name: &p,
                    class: "m-pause",
                    value: pause,
                },
            ],
        )
    };
    let p = &r.policy;
    (
        chart(
            "Hard-bounce rate per UTC day over the last 30 days, with the warning and pause thresholds",
            "Bounce rate",
            "s-bounced",
            rate(Counts::bounce_rate),
            p.bounce_rate_warning,
            p.bounce_rate_pause,
        ),
        chart(
            "Complaint rate per UTC day over the last 30 days, with the warning and pause thresholds",
            "Complaint rate",
            "s-complained",
            rate(Counts::complaint_rate),
            p.complaint_rate_warning,
            p.complaint_rate_pause,
        ),
    )
}
