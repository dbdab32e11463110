//! The overview (`/console`): the last 24 hours and 7 days of the platform
//! (admins) or of the user's tenant, the queue now, the tenants that need
//! attention, and two charts. Figures come from `overview_model` and
//! `usage::model` in one pooled call; this module only shapes them.
//!
//! The 24-hour window counts the messages accepted in it by where they are
//! now (`emails`, bounded by `RECENT_CAP`); the 7-day window sums the daily
//! usage counters (outcomes on the UTC day they happened), which count no
//! deferrals: the queue's "waiting" says what is retrying now.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::charts::{bars, Layout, Series};
use super::overview_model::{self as m, Attention, QueueNow, RecentRow};
use crate::db::PgPool;
use crate::error::AppResult;
use crate::usage::model::Counters;

/// One window's figures; `None` where the source does not count it.
#[derive(Debug, Default, Serialize)]
pub struct Window {
    pub accepted: i64,
    pub delivered: i64,
    pub bounced: i64,
    pub complained: i64,
    pub deferred: Option<i64>,
    pub failed: i64,
    pub suppressed: i64,
    /// Queued, sending, scheduled or held: not settled yet.
    pub in_progress: Option<i64>,
}

impl Window {
    /// Bounced of delivered + bounced, in percent with one decimal.
    pub fn bounce_rate(&self) -> Option<f64> {
        rate(self.bounced, self.delivered + self.bounced, 100.0)
    }
}

fn rate(part: i64, whole: i64, per: f64) -> Option<f64> {
    (whole > 0).then(|| ((part as f64 * per / whole as f64) * 10.0).round() / 10.0)
}

#[derive(Debug, Serialize)]
pub struct AttentionView {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    /// `healthy`, `warning` or `paused`.
    pub reputation: String,
    pub reasons: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Overview {
    pub day: Window,
    pub day_bounce_rate: Option<f64>,
    pub week: Window,
    pub week_bounce_rate: Option<f64>,
    /// The 24 hours held this many messages or more: the newest this many counted.
    pub capped: Option<i64>,
    pub queue: QueueNow,
    pub attention: Vec<AttentionView>,
    pub hourly_chart: String,
    pub daily_chart: String,
}

/// Reads and shapes the overview of `tenant` (`None`: the platform).
pub async fn load(pool: &PgPool, tenant: Option<Uuid>) -> AppResult<Overview> {
    let now = Utc::now();
    let today = now.date_naive();
    let from = today - Duration::days(6);
    let (recent, week, queue, attention) = crate::db::run(pool, move |conn| {
        Ok((
            m::recent(conn, tenant, now - Duration::hours(24), m::RECENT_CAP)?,
            crate::usage::model::totals_by_day(conn, tenant, from, today)?,
            m::queue_now(conn, tenant)?,
            m::attention(conn, tenant, from, today)?,
        ))
    })
    .await?;
    Ok(shape(now, &recent, &week, queue, attention, m::RECENT_CAP))
}

pub fn shape(
    now: DateTime<Utc>,
    recent: &[RecentRow],
    week: &[(NaiveDate, Counters)],
    queue: QueueNow,
    attention: Vec<Attention>,
    cap: i64,
) -> Overview {
    let day = last_day(recent);
    let today = now.date_naive();
    let days: Vec<NaiveDate> = (0..7).rev().map(|k| today - Duration::days(k)).collect();
    let by_day: BTreeMap<NaiveDate, &Counters> = week.iter().map(|(d, c)| (*d, c)).collect();
    let mut total = Counters::default();
    for c in by_day.values() {
        total.add(c);
    }
    let week_w = Window {
        accepted: total.emails_sent,
        delivered: total.emails_delivered,
        bounced: total.emails_bounced,
        complained: total.emails_complained,
        deferred: None,
        failed: total.emails_failed,
        suppressed: total.emails_suppressed,
        in_progress: None,
    };
    let pick = |f: fn(&Counters) -> i64| -> Vec<i64> {
        days.iter()
            .map(|d| by_day.get(d).map_or(0, |c| f(c)))
            .collect()
    };
    let daily_chart = bars(
        "Last 7 days per UTC day: accepted, delivered, bounced and complained messages",
        &days
            .iter()
            .map(|d| format!("{} {}", d.weekday(), d.day()))
            .collect::<Vec<_>>(),
        &[
            Series {
                name: "Accepted",
                class: "s-accepted",
                values: pick(|c| c.emails_sent),
            },
            Series {
                name: "Delivered",
                class: "s-delivered",
                values: pick(|c| c.emails_delivered),
            },
            Series {
                name: "Bounced",
                class: "s-bounced",
                values: pick(|c| c.emails_bounced),
            },
            Series {
                name: "Complained",
                class: "s-complained",
                values: pick(|c| c.emails_complained),
            },
        ],
        Layout::Grouped,
    );
    let hourly_chart = hourly(now, recent);
    Overview {
        day_bounce_rate: day.bounce_rate(),
        week_bounce_rate: week_w.bounce_rate(),
        capped: (day.accepted >= cap).then_some(cap),
        day,
        week: week_w,
        queue,
        attention: attention.into_iter().map(reasons).collect(),
        hourly_chart,
        daily_chart,
    }
}

fn last_day(recent: &[RecentRow]) -> Window {
    let mut w = Window {
        deferred: Some(0),
        in_progress: Some(0),
        ..Window::default()
    };
    for r in recent {
        w.accepted += r.n;
        w.complained += r.complained;
        match r.status.as_str() {
            "delivered" => w.delivered += r.n,
            "bounced" => w.bounced += r.n,
            "failed" | "canceled" => w.failed += r.n,
            "suppressed" => w.suppressed += r.n,
            "deferred" => *w.deferred.get_or_insert(0) += r.n,
            _ => *w.in_progress.get_or_insert(0) += r.n,
        }
    }
    w
}

/// Accepted per hour of the last 24 (UTC), stacked by where they are now.
fn hourly(now: DateTime<Utc>, recent: &[RecentRow]) -> String {
    let start = now
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now)
        - Duration::hours(23);
    let slot = |t: DateTime<Utc>| -> Option<usize> {
        let h = (t - start).num_hours();
        (0..24).contains(&h).then_some(h as usize)
    };
    let mut parts = [[0i64; 24]; 4];
    for r in recent {
        let k = match r.status.as_str() {
            "delivered" => 0,
            "bounced" => 2,
            "failed" | "canceled" | "suppressed" => 3,
            _ => 1,
        };
        // The first hour of the window is partly older than 24 h: its rows
        // fall before `start` only by minutes, so they count in slot 0.
        if let Some(i) = slot(r.hour).or((r.hour < start).then_some(0)) {
            parts[k][i] += r.n;
        }
    }
    let labels: Vec<String> = (0..24)
        .map(|h| format!("{:02}:00", (start + Duration::hours(h)).hour()))
        .collect();
    bars(
        "Messages accepted per hour over the last 24 hours (UTC), by where they are now",
        &labels,
        &[
            Series {
                name: "Delivered",
                class: "s-delivered",
                values: parts[0].to_vec(),
            },
            Series {
                name: "In progress",
                class: "s-progress",
                values: parts[1].to_vec(),
            },
            Series {
                name: "Bounced",
                class: "s-bounced",
                values: parts[2].to_vec(),
            },
            Series {
                name: "Not sent",
                class: "s-failed",
                values: parts[3].to_vec(),
            },
        ],
        Layout::Stacked,
    )
}

fn reasons(a: Attention) -> AttentionView {
    let mut why = Vec::new();
    if a.reputation != "healthy" {
        why.push(match &a.reputation_reason {
            Some(r) => format!("reputation {}: {r}", a.reputation),
            None => format!("reputation {}", a.reputation),
        });
    }
    if a.status == "suspended" {
        why.push("suspended: its mail is held".to_string());
    }
    let outcomes = a.delivered + a.bounced;
    if outcomes >= m::MIN_OUTCOMES && a.bounced * 100 >= m::BOUNCE_RATE_PCT * outcomes {
        if let Some(r) = rate(a.bounced, outcomes, 100.0) {
            why.push(format!(
                "bounce rate {r}% over 7 days ({} of {outcomes})",
                a.bounced
            ));
        }
    }
    if a.complained > 0 && a.complained * 1000 >= m::COMPLAINTS_PER_MILLE * a.delivered {
        why.push(format!(
            "{} complaint{} over 7 days ({} delivered)",
            a.complained,
            if a.complained == 1 { "" } else { "s" },
            a.delivered
        ));
    }
    if let Some(cap) = a
        .emails_per_day
        .filter(|c| a.sent_today * 100 >= m::QUOTA_PCT * i64::from(*c))
    {
        let word = if a.sent_today >= i64::from(cap) {
            "at"
        } else {
            "near"
        };
        why.push(format!(
            "{word} its daily cap: {} of {cap} today",
            a.sent_today
        ));
    }
    AttentionView {
        id: a.id,
        name: a.name,
        status: a.status,
        reputation: a.reputation,
        reasons: why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn row(hour: DateTime<Utc>, status: &str, n: i64, complained: i64) -> RecentRow {
        RecentRow {
            hour,
            status: status.into(),
            n,
            complained,
        }
    }

    #[test]
    fn the_day_counts_by_status_and_the_week_sums_usage() {
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 10, 30, 0).unwrap();
        let h = Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap();
        let recent = [
            row(h, "delivered", 7, 1),
            row(h, "bounced", 2, 0),
            row(h, "deferred", 1, 0),
            row(h, "queued", 3, 0),
        ];
        let c = Counters {
            emails_sent: 20,
            emails_delivered: 15,
            emails_bounced: 5,
            ..Counters::default()
        };
        let o = shape(
            now,
            &recent,
            &[(now.date_naive(), c)],
            QueueNow::default(),
            Vec::new(),
            100,
        );
        assert_eq!((o.day.accepted, o.day.delivered, o.day.bounced), (13, 7, 2));
        assert_eq!(
            (o.day.complained, o.day.deferred, o.day.in_progress),
            (1, Some(1), Some(3))
        );
        assert_eq!(
            (o.week.accepted, o.week.bounced, o.week.deferred),
            (20, 5, None)
        );
        assert_eq!(o.week_bounce_rate, Some(25.0));
        assert!(o.capped.is_none());
        let at_cap = shape(now, &recent, &[], QueueNow::default(), Vec::new(), 13);
        assert_eq!(at_cap.capped, Some(13));
        assert!(
            o.hourly_chart.contains("<title>09:00 Delivered: 7</title>"),
            "{}",
            o.hourly_chart
        );
        assert!(
            o.daily_chart.contains("<title>Sun 6 Accepted: 20</title>"),
            "{}",
            o.daily_chart
        );
    }

    #[test]
    fn attention_says_why() {
        let a = Attention {
            id: Uuid::nil(),
            name: "Shop".into(),
            status: "suspended".into(),
            delivered: 80,
            bounced: 20,
            complained: 1,
            sent_today: 95,
            emails_per_day: Some(100),
            reputation: "paused".into(),
            reputation_reason: Some("bounce rate 25.00%".into()),
        };
        let v = reasons(a);
        assert_eq!(v.reasons.len(), 5, "{:?}", v.reasons);
        assert_eq!(v.reasons[0], "reputation paused: bounce rate 25.00%");
        assert_eq!(v.reasons[2], "bounce rate 20% over 7 days (20 of 100)");
        assert_eq!(v.reasons[4], "near its daily cap: 95 of 100 today");
    }
}
