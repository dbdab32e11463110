//! The per-tenant suppression list (issue 13): `model` (rows, queries),
//! `check` (the send path: suppressed recipients are recorded, not sent),
//! `service` (API operations for a resolved tenant), `routes`.

pub mod check;
pub mod model;
pub mod routes;
pub mod service;

use chrono::{DateTime, Utc};

/// When a hard bounce recorded now leaves the list (`None`: never, when
/// `suppressions.hard_bounce_days` is 0).
pub fn hard_bounce_expiry(days: u32) -> Option<DateTime<Utc>> {
    (days > 0).then(|| Utc::now() + chrono::Duration::days(i64::from(days)))
}
