//! `requests_per_minute`: cluster-wide, a budget per tenant and minute leased
//! by the nodes (`crate::cluster::rate`; [`admit`]). Admin keys are limited
//! per key by `limits.admin_requests_per_minute` (0 = unlimited), never by a
//! tenant's limit. [`ApiLimiter`] (one governor per subject, `limit /
//! limits.nodes` per node) still limits OAuth token requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use uuid::Uuid;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

struct Entry {
    per_minute: u32,
    limiter: Limiter,
}

/// What one request learned about its limit (for the RateLimit headers).
#[derive(Clone, Copy, Debug)]
pub struct RateState {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window is full again.
    pub reset_secs: u64,
    /// `Some(seconds)` when this request is refused.
    pub retry_after_secs: Option<u64>,
}

pub struct ApiLimiter {
    nodes: u32,
    entries: Mutex<HashMap<Uuid, Arc<Entry>>>,
}

impl ApiLimiter {
    pub fn new(nodes: u32) -> Self {
        Self {
            nodes: nodes.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request of `subject` (a tenant, or an admin key) against
    /// `per_minute` (cluster-wide; divided by the node count here).
    pub fn check(&self, subject: Uuid, per_minute: u32) -> RateState {
        let entry = self.entry(subject, per_minute);
        let quota = super::per_node(per_minute, self.nodes);
        let limit = quota.get();
        let refill = Duration::from_secs(60) / limit;
        match entry.limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                RateState {
                    limit,
                    remaining,
                    reset_secs: (refill * (limit - remaining)).as_secs_f64().ceil() as u64,
                    retry_after_secs: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                RateState {
                    limit,
                    remaining: 0,
                    reset_secs: (refill * limit).as_secs_f64().ceil() as u64,
                    retry_after_secs: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
                }
            }
        }
    }

    fn entry(&self, subject: Uuid, per_minute: u32) -> Arc<Entry> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get(&subject) {
            if e.per_minute == per_minute {
                return e.clone();
            }
        }
        let quota = Quota::per_minute(super::per_node(per_minute, self.nodes));
        let entry = Arc::new(Entry {
            per_minute,
            limiter: RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>(),
        });
        map.insert(subject, entry.clone());
        entry
    }
}

/// `RateLimit-Policy: <limit>;w=60` and `RateLimit: limit=…, remaining=…, reset=…`
/// on every response of a limited subject; 429s add `Retry-After` (set by the error).
pub fn set_headers(headers: &mut actix_web::http::header::HeaderMap, s: &RateState) {
    use actix_web::http::header::{HeaderName, HeaderValue};
    let policy = format!("{};w=60", s.limit);
    let state = format!(
        "limit={}, remaining={}, reset={}",
        s.limit, s.remaining, s.reset_secs
    );
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_subject_and_rebuilds_on_change() {
        let l = ApiLimiter::new(1);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for i in 0..3 {
            let s = l.check(a, 3);
            assert!(s.retry_after_secs.is_none(), "request {i}");
            assert_eq!(s.remaining, 2 - i);
        }
        assert!(l.check(a, 3).retry_after_secs.is_some());
        assert!(l.check(b, 3).retry_after_secs.is_none(), "independent");
        assert!(
            l.check(a, 10).retry_after_secs.is_none(),
            "a new limit is a new bucket"
        );
    }
}

/// Who one request counts against: a tenant (its `requests_per_minute`, or
/// `limits.default_requests_per_minute`), or an admin key for itself
/// (`limits.admin_requests_per_minute`).
#[derive(Clone, Copy, Debug)]
pub enum Subject {
    Tenant(crate::domain::TenantId),
    AdminKey(Uuid),
}

/// Counts one request (HTTP, or a message over SMTP submission): the rate
/// state (`None` when unlimited) and, when it is refused, the 429 error.
/// Admitted tenant requests are counted for usage.
pub async fn admit(
    state: &crate::state::AppState,
    subject: Subject,
) -> crate::error::AppResult<(Option<RateState>, Option<crate::error::AppError>)> {
    let limits = &state.settings.limits;
    let (id, per_minute) = match subject {
        Subject::Tenant(tenant) => {
            let row = state
                .tenants
                .get(&crate::tenants::model::TenantRef::Id(tenant.0))
                .await?;
            let own = row.requests_per_minute.and_then(|n| u32::try_from(n).ok());
            (tenant.0, own.unwrap_or(limits.default_requests_per_minute))
        }
        Subject::AdminKey(key) => (key, limits.admin_requests_per_minute),
    };
    let rate = if per_minute > 0 {
        let a = state
            .rates
            .admit(id, "requests_per_minute", i64::from(per_minute), 60)
            .await;
        Some(RateState {
            limit: per_minute,
            remaining: u32::try_from(a.remaining).unwrap_or(0),
            reset_secs: a.reset_secs,
            retry_after_secs: (!a.admitted).then_some(a.reset_secs),
        })
    } else {
        None
    };
    if let Some(retry_after_secs) = rate.and_then(|r| r.retry_after_secs) {
        crate::metrics::limited("rate_limited");
        let limit = rate.map_or(per_minute, |r| r.limit);
        let refused = crate::error::AppError::TooManyRequests {
            code: "rate_limited",
            detail: format!("Rate limit of {limit} requests per minute exceeded."),
            retry_after_secs,
        };
        return Ok((rate, Some(refused)));
    }
    if let Subject::Tenant(tenant) = subject {
        state.requests.hit(tenant.0);
    }
    Ok((rate, None))
}
