//! Tenants (admins: list, create, limits, SMTP override, suspend, delete)
//! and one tenant's page with its users (admins and the tenant's owner).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{input, number, see_other};
use crate::console::invite_mail;
use crate::console::render::page;
use crate::console::session::{ConsoleResult, Post};
use crate::console::team::{self, Change};
use crate::console::users::{self, ConsoleUser, Role};
use crate::console::{request_id, tenant_for, Layout};
use crate::db::pagination::PageQuery;
use crate::domain::Permission;
use crate::error::AppError;
use crate::state::AppState;
use crate::tenants::model::TenantRef;
use crate::tenants::service;

#[derive(Deserialize)]
pub struct ListQuery {
    pub cursor: Option<String>,
}

pub async fn list(
    user: ConsoleUser,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> ConsoleResult<HttpResponse> {
    user.who.require_admin(Permission::TenantsRead)?;
    let page_req = PageQuery {
        limit: Some(50),
        cursor: q.into_inner().cursor,
    }
    .validate()?;
    let tenants = service::list(&state, page_req).await?;
    // Paused, then warned tenants first (issue 25), above the full list.
    let flagged = crate::reputation::service::flagged(&state).await?;
    Ok(page(
        "tenants.html",
        ctx! { layout => Layout::new(&state, &user, None, "tenants").await, tenants, flagged },
    )?)
}

#[derive(Deserialize)]
pub struct CreateForm {
    pub name: Option<String>,
    pub external_id: Option<String>,
    pub domain: Option<String>,
    pub requests_per_minute: Option<String>,
    pub emails_per_day: Option<String>,
}

pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Post<CreateForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require_admin(Permission::TenantsWrite)?;
    let body = json!({
        "name": f.name.unwrap_or_default(),
        "external_id": f.external_id,
        "domain": f.domain,
        "rate_limit": {
            "requests_per_minute": number("requests_per_minute", &f.requests_per_minute)?,
            "emails_per_day": number("emails_per_day", &f.emails_per_day)?,
        },
    });
    let t = service::create(&state, &user.actor(request_id(&req)), input(body)?).await?;
    Ok(see_other(&format!("/console/tenants/{}", t.id)))
}

pub async fn show(
    user: ConsoleUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ConsoleResult<HttpResponse> {
    if user.is_admin() {
        user.who.require_admin(Permission::TenantsRead)?;
    }
    let id = tenant_for(&state, &user, Some(&path))
        .await?
        .ok_or(AppError::NotFound)?;
    let tenant = service::get(&state, TenantRef::Id(id.0)).await?;
    let team = team::team(&state.pool, id).await?;
    let can_invite = team::can_manage(&user);
    let reputation = crate::reputation::service::get(&state, id).await?;
    Ok(page(
        "tenant.html",
        ctx! {
            layout => Layout::new(&state, &user, Some(id), "tenants").await,
            tenant, team, can_invite, invited => None::<String>, mailed => None::<()>,
            reputation, pools => pool_names(&state),
        },
    )?)
}

#[derive(Deserialize)]
pub struct ChangeForm {
    /// suspend, activate, reinstate, delete, limits or smtp.
    pub action: Option<String>,
    pub requests_per_minute: Option<String>,
    pub emails_per_day: Option<String>,
    pub emails_per_second: Option<String>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<String>,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<String>,
    pub smtp_tls: Option<String>,
    /// With `pools`: the egress pool of each stream.
    pub pool_transactional: Option<String>,
    pub pool_broadcast: Option<String>,
}

/// The egress pools an admin can pick: `default` and the configured ones.
fn pool_names(state: &AppState) -> Vec<String> {
    std::iter::once("default".to_string())
        .chain(
            state
                .settings
                .delivery
                .pools
                .iter()
                .map(|p| p.name.clone())
                .filter(|n| n != "default"),
        )
        .collect()
}

pub async fn change(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    post: Post<ChangeForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require_admin(Permission::TenantsWrite)?;
    let id = tenant_for(&state, &user, Some(&path))
        .await?
        .ok_or(AppError::NotFound)?;
    let actor = user.actor(request_id(&req));
    let r = TenantRef::Id(id.0);
    let patch = match f.action.as_deref() {
        Some("delete") => {
            service::delete(&state, &actor, r).await?;
            return Ok(see_other("/console/tenants"));
        }
        Some("reinstate") => {
            crate::reputation::service::reinstate(&state, &actor, id, None).await?;
            return Ok(see_other(&format!("/console/tenants/{}", id.0)));
        }
        Some("suspend") => json!({"status": "suspended"}),
        Some("activate") => json!({"status": "active"}),
        Some("limits") => json!({"rate_limit": {
            "requests_per_minute": number("requests_per_minute", &f.requests_per_minute)?,
            "emails_per_day": number("emails_per_day", &f.emails_per_day)?,
            "emails_per_second": number("emails_per_second", &f.emails_per_second)?,
        }}),
        // The same update as `PATCH /v1/tenants/{id}` `{"pools": …}`: an
        // unknown pool is refused there (422 `unknown_pool`).
        Some("pools") => json!({"pools": {
            "transactional": f.pool_transactional,
            "broadcast": f.pool_broadcast,
        }}),
        Some("smtp") if f.smtp_host.is_none() => json!({"smtp": null}),
        Some("smtp") => json!({"smtp": {
            "host": f.smtp_host,
            "port": number("smtp_port", &f.smtp_port)?,
            "username": f.smtp_username,
            "password": f.smtp_password,
            "tls": f.smtp_tls,
        }}),
        _ => return Err(AppError::invalid("action", "unknown action").into()),
    };
    service::update(&state, &actor, r, input(patch)?).await?;
    Ok(see_other(&format!("/console/tenants/{}", id.0)))
}

#[derive(Deserialize)]
pub struct InviteForm {
    pub email: Option<String>,
    pub role: Option<String>,
}

/// Adds a user to the tenant; the one-time link is shown once, here, and
/// mailed to the user when a relay is configured (`invite_mail`).
pub async fn invite_user(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    post: Post<InviteForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    let id = tenant_for(&state, &user, Some(&path))
        .await?
        .ok_or(AppError::NotFound)?;
    if !team::can_manage(&user) {
        return Err(AppError::forbidden("owner_only", "Only an owner adds users.").into());
    }
    let role = f
        .role
        .as_deref()
        .and_then(Role::parse)
        .filter(|r| *r != Role::Admin)
        .ok_or_else(|| AppError::invalid("role", "must be owner, developer or viewer"))?;
    let created = users::create(
        &state.pool,
        &user.actor(request_id(&req)),
        f.email.as_deref().unwrap_or_default(),
        role,
        Some(TenantRef::Id(id.0)),
        None,
        state.settings.console.invitation_ttl_secs,
    )
    .await?;
    let link = created
        .invitation
        .map(|t| users::invitation_link(&state.settings.console, t.expose()));
    // The link is shown whatever becomes of the mail.
    let mailed = match &link {
        Some(l) => Some(invite_mail::send(&state.settings, id, &created.user.email, l).await),
        None => None,
    };
    let tenant = service::get(&state, TenantRef::Id(id.0)).await?;
    let team = team::team(&state.pool, id).await?;
    let reputation = crate::reputation::service::get(&state, id).await?;
    Ok(page(
        "tenant.html",
        ctx! {
            layout => Layout::new(&state, &user, Some(id), "tenants").await,
            tenant, team, can_invite => true, invited => link, mailed, reputation,
            pools => pool_names(&state),
            invitee => created.user.email,
        },
    )?)
}

#[derive(Deserialize)]
pub struct UserForm {
    /// role (with `role`) or remove.
    pub action: Option<String>,
    pub role: Option<String>,
}

/// Changes a team member's role or removes them (admins and owners).
pub async fn change_user(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    post: Post<UserForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    let (tenant, member) = path.into_inner();
    let id = tenant_for(&state, &user, Some(&tenant))
        .await?
        .ok_or(AppError::NotFound)?;
    let member = uuid::Uuid::parse_str(&member).map_err(|_| AppError::NotFound)?;
    let change = match f.action.as_deref() {
        Some("remove") => Change::Remove,
        Some("role") => Change::Role(
            f.role
                .as_deref()
                .and_then(Role::parse)
                .ok_or_else(|| AppError::invalid("role", "must be owner, developer or viewer"))?,
        ),
        _ => return Err(AppError::invalid("action", "must be role or remove").into()),
    };
    let actor = user.actor(request_id(&req));
    team::change(&state.pool, &actor, &user, id, member, change).await?;
    // Having removed themselves, the user is signed out: the page then
    // redirects to the login form.
    Ok(see_other(&format!("/console/tenants/{}", id.0)))
}
