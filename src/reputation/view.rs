//! The reputation object (API.md "Reputation"): the API's replies, the
//! webhooks' `data` and the console's page.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::policy::{Counts, Policy};

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct WindowView {
    pub hours: i32,
    pub delivered: i64,
    pub hard_bounced: i64,
    pub complained: i64,
    pub bounce_rate: f64,
    pub complaint_rate: f64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DomainFigures {
    pub name: String,
    pub delivered: i64,
    pub hard_bounced: i64,
    pub complained: i64,
    pub bounce_rate: f64,
    pub complaint_rate: f64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ReputationDay {
    pub day: NaiveDate,
    pub delivered: i64,
    pub hard_bounced: i64,
    pub complained: i64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ReputationView {
    pub tenant_id: Uuid,
    /// `healthy`, `warning` or `paused`.
    pub status: String,
    pub reason: Option<String>,
    pub paused_at: Option<DateTime<Utc>>,
    pub reinstated_at: Option<DateTime<Utc>>,
    /// The effective policy (defaults with the tenant's override).
    pub policy: Policy,
    /// The policy's window, then 168 hours.
    pub windows: Vec<WindowView>,
    pub domains: Vec<DomainFigures>,
    /// The last 30 days (UTC), oldest first.
    pub daily: Vec<ReputationDay>,
}

impl ReputationView {
    /// The policy window's complaint rate (the admin listing's order).
    pub fn complaint_rate(&self) -> f64 {
        self.windows
            .first()
            .map(|w| w.complaint_rate)
            .unwrap_or(0.0)
    }
}

pub fn window(hours: i32, c: Counts) -> WindowView {
    WindowView {
        hours,
        delivered: c.delivered,
        hard_bounced: c.hard_bounced,
        complained: c.complained,
        bounce_rate: c.bounce_rate(),
        complaint_rate: c.complaint_rate(),
    }
}

pub fn domain(name: String, c: Counts) -> DomainFigures {
    DomainFigures {
        name,
        delivered: c.delivered,
        hard_bounced: c.hard_bounced,
        complained: c.complained,
        bounce_rate: c.bounce_rate(),
        complaint_rate: c.complaint_rate(),
    }
}

pub fn day(day: NaiveDate, c: Counts) -> ReputationDay {
    ReputationDay {
        day,
        delivered: c.delivered,
        hard_bounced: c.hard_bounced,
        complained: c.complained,
    }
}
