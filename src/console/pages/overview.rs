//! `/console`: the overview, every user's first screen (the platform for
//! admins, the user's tenant for tenant users).

use actix_web::{web, HttpResponse};

use crate::console::overview;
use crate::console::overview_model::{
    BOUNCE_RATE_PCT, COMPLAINTS_PER_MILLE, MIN_OUTCOMES, QUOTA_PCT,
};
use crate::console::render::page;
use crate::console::session::ConsoleResult;
use crate::console::users::ConsoleUser;
use crate::console::Layout;
use crate::domain::Permission;
use crate::state::AppState;

pub async fn show(user: ConsoleUser, state: web::Data<AppState>) -> ConsoleResult<HttpResponse> {
    let tenant = if user.is_admin() {
        user.who.require_admin(Permission::TenantsRead)?;
        None
    } else {
        user.who.require(Permission::UsageRead)?;
        user.tenant()
    };
    let overview = overview::load(&state.pool, tenant.map(|t| t.0)).await?;
    Ok(page(
        "overview.html",
        ctx! {
            layout => Layout::new(&state, &user, tenant, "overview").await,
            overview,
            thresholds => ctx! {
                bounce_pct => BOUNCE_RATE_PCT, min_outcomes => MIN_OUTCOMES,
                complaints_per_mille => COMPLAINTS_PER_MILLE, quota_pct => QUOTA_PCT,
            },
        },
    )?)
}
