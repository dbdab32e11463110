//! `requests_per_minute`: cluster-wide, a budget per tenant and minute leased
//! by the nodes (`crate::cluster::rate`; [`admit`]). Admin keys are limited
//! per key by `limits.admin_requests_per_minute` (0 = unlimited), never by a
//! tenant's limit. OAuth token requests per client
//! (`oauth.token_requests_per_minute`) count the same way ([`per_minute`]).

use uuid::Uuid;

use crate::cluster::rate::Rates;

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

/// Counts one request of `subject` against `per_minute` across every node:
/// a window budget per subject and calendar minute named
/// `<what>:60:<minute>` (`requests_per_minute` for tenants and admin keys,
/// `token_requests_per_minute` for OAuth clients).
pub async fn per_minute(rates: &Rates, subject: Uuid, what: &str, per_minute: u32) -> RateState {
    let a = rates.admit(subject, what, i64::from(per_minute), 60).await;
    RateState {
        limit: per_minute,
        remaining: u32::try_from(a.remaining).unwrap_or(0),
        reset_secs: a.reset_secs,
        retry_after_secs: (!a.admitted).then_some(a.reset_secs),
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
        Some(self::per_minute(&state.rates, id, "requests_per_minute", per_minute).await)
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
