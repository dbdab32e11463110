//! Drop-in APIs for existing senders (issue 14): Resend's at the root
//! (`/emails…`) and Postmark's at `/email…`. Each is a thin adapter onto the
//! same emails service as `/v1` — it maps the vendor's body to a `/v1` send
//! body, calls `emails::service`, and maps the reply and any `AppError` to the
//! vendor's shapes. There is no second send path: every tenant rule (From
//! domain, suppressions, limits, quota, idempotency) applies unchanged;
//! Postmark's routes send through `emails::each` (one answer per message,
//! all-suppressed messages refused with 406) on the same ingest.

pub mod content;
pub mod postmark;
pub mod postmark_shapes;
pub mod resend;
pub mod resend_shapes;

use actix_web::{HttpMessage, HttpRequest};

use crate::auth::Principal;
use crate::domain::Permission;
use crate::error::{AppError, AppResult};
use crate::limits::api::RateState;

pub use content::Content;

/// The caller of a compat route: a tenant key with `p`. Admin keys are
/// refused (these APIs have no notion of acting for another tenant).
pub fn tenant_caller(who: Result<Principal, AppError>, p: Permission) -> AppResult<Principal> {
    let who = who?;
    if who.is_admin() {
        return Err(AppError::forbidden(
            "tenant_key_required",
            "This API takes a tenant key.",
        ));
    }
    who.require(p)?;
    Ok(who)
}

/// The Idempotency-Key header as `/v1` reads it.
pub fn idempotency_key(req: &HttpRequest) -> AppResult<Option<String>> {
    match req.headers().get("Idempotency-Key") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| AppError::invalid("Idempotency-Key", "must be printable ASCII")),
    }
}

/// The caller's rate-limit state, when its tenant has a limit.
pub fn rate_state(req: &HttpRequest) -> Option<RateState> {
    req.extensions().get::<RateState>().copied()
}

/// Logs what `AppError`'s own response would log (the cause of a 5xx), since
/// the adapters answer with their own bodies.
pub fn log_server_error(e: &AppError) {
    match e {
        AppError::Internal(e) => tracing::error!(error = %format!("{e:#}"), "internal error"),
        AppError::Unavailable(e) => tracing::warn!(error = %e, "service unavailable"),
        _ => {}
    }
}

/// Marks an error response whose body the vendor's API prescribes, so the
/// problem-JSON rewrite of bare errors leaves it alone.
pub fn vendor_error_body(resp: &mut actix_web::HttpResponse) {
    resp.extensions_mut().insert(crate::http::ProtocolErrorBody);
}

/// The `id` of a `/v1` accepted reply (`{"id", "status"}`), replayed or fresh.
pub fn accepted_id(v: &serde_json::Value) -> serde_json::Value {
    v.get("id").cloned().unwrap_or(serde_json::Value::Null)
}
