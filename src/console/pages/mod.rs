//! One module per console screen. Handlers are thin: they take the
//! [`super::users::ConsoleUser`] (or a CSRF-checked [`super::session::Post`]),
//! check the role's permission, call the capability's service with the
//! user's `who` and audit `actor`, and render.

pub mod account;
pub mod auth;
pub mod domains;
pub mod inbound;
pub mod keys;
pub mod login_totp;
pub mod message_view;
pub mod messages;
pub mod overview;
pub mod queue;
pub mod reputation;
pub mod suppressions;
pub mod tenants;
pub mod usage;
pub mod webhooks;

use actix_web::http::header;
use actix_web::HttpResponse;

/// Post/Redirect/Get: back to `to` after a change.
/// `/`: the console.
pub async fn front() -> HttpResponse {
    see_other("/console")
}

pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_string()))
        .insert_header(super::render::csp())
        .finish()
}

/// `?tenant=` for links and redirects of admins (`""` for tenant users).
pub fn tenant_q(user: &super::users::ConsoleUser, t: crate::domain::TenantId) -> String {
    if user.is_admin() {
        format!("?tenant={}", t.0)
    } else {
        String::new()
    }
}

/// A form's number field: empty is `None`, anything else must be an integer.
pub fn number(field: &str, v: &Option<String>) -> crate::error::AppResult<Option<i64>> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| crate::error::AppError::invalid(field, "must be a whole number")),
    }
}

/// Builds a service input from form values through its own `Deserialize`
/// (the API's one validation path); a type mismatch names the form.
pub fn input<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> crate::error::AppResult<T> {
    serde_json::from_value(v).map_err(|e| crate::error::AppError::invalid("form", e.to_string()))
}

/// An admin on a tenant page without `?tenant=`: the tenants to pick from.
pub async fn pick(
    state: &crate::state::AppState,
    user: &super::users::ConsoleUser,
    active: &'static str,
) -> super::session::ConsoleResult<HttpResponse> {
    user.who
        .require_admin(crate::domain::Permission::TenantsRead)?;
    let page_req = crate::db::pagination::PageQuery {
        limit: Some(100),
        cursor: None,
    }
    .validate()?;
    let tenants = crate::tenants::service::list(state, page_req).await?;
    Ok(super::render::page(
        "pick.html",
        ctx! {
            layout => super::Layout::new(state, user, None, active).await,
            tenants, target => format!("/console/{active}"),
        },
    )?)
}
