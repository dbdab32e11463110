//! API keys: a tenant's (owners, admins with `?tenant=`) or the admin keys
//! (admins without a tenant). The secret is shown once, in the answer to
//! the create form, never again.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{input, see_other, tenant_q};
use crate::console::render::page;
use crate::console::session::{ConsoleResult, Post};
use crate::console::users::ConsoleUser;
use crate::console::{request_id, tenant_for, Layout, TenantQuery};
use crate::db::pagination::PageQuery;
use crate::domain::{Permission, TenantId};
use crate::keys::service::{self, KeyView};
use crate::oauth::clients as oauth;
use crate::state::AppState;
use crate::tenants::model::TenantRef;

/// Permissions offered by the form: a tenant key's, or every one for admin keys.
fn offered(tenant: Option<TenantId>) -> Vec<&'static str> {
    Permission::ALL
        .into_iter()
        .filter(|p| tenant.is_none() || p.allowed_for_tenant_keys())
        .map(Permission::as_str)
        .collect()
}

async fn render(
    state: &AppState,
    user: &ConsoleUser,
    tenant: Option<TenantId>,
    created: Option<KeyView>,
    created_client: Option<oauth::ClientView>,
) -> ConsoleResult<HttpResponse> {
    let page_req = PageQuery {
        limit: Some(100),
        cursor: None,
    }
    .validate()?;
    let keys = service::list(state, tenant.map(|t| TenantRef::Id(t.0)), page_req).await?;
    let clients = oauth::list(&state.pool, tenant.map(|t| TenantRef::Id(t.0)), page_req).await?;
    // The one response that carries a secret: serialised here, shown once.
    let created = created.map(|k| serde_json::to_value(&k).unwrap_or_default());
    Ok(page(
        "keys.html",
        ctx! {
            layout => Layout::new(state, user, tenant, "keys").await,
            keys, clients, created, created_client, permissions => offered(tenant),
        },
    )?)
}

pub async fn list(
    user: ConsoleUser,
    state: web::Data<AppState>,
    q: web::Query<TenantQuery>,
) -> ConsoleResult<HttpResponse> {
    user.who.require(Permission::KeysWrite)?;
    let tenant = tenant_for(&state, &user, q.tenant.as_deref()).await?;
    render(&state, &user, tenant, None, None).await
}

#[derive(Deserialize)]
pub struct CreateForm {
    pub tenant: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
}

pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    post: Post<CreateForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require(Permission::KeysWrite)?;
    let tenant = tenant_for(&state, &user, f.tenant.as_deref()).await?;
    let body = input(json!({
        "name": f.name.unwrap_or_default(),
        "permissions": (!f.permissions.is_empty()).then_some(f.permissions),
    }))?;
    let actor = user.actor(request_id(&req));
    let key = match tenant {
        Some(t) => {
            service::create_tenant_key(&state, &user.who, &actor, TenantRef::Id(t.0), body).await?
        }
        None => service::create_admin_key(&state, &user.who, &actor, body).await?,
    };
    render(&state, &user, tenant, Some(key), None).await
}

#[derive(Deserialize)]
pub struct RevokeForm {
    pub tenant: Option<String>,
}

pub async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    post: Post<RevokeForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require(Permission::KeysWrite)?;
    let tenant = tenant_for(&state, &user, f.tenant.as_deref()).await?;
    let actor = user.actor(request_id(&req));
    service::revoke(&state, &actor, tenant.map(|t| TenantRef::Id(t.0)), &path).await?;
    let q = tenant.map(|t| tenant_q(&user, t)).unwrap_or_default();
    Ok(see_other(&format!("/console/keys{q}")))
}

/// OAuth clients (client credentials) of the same owner, on the same page:
/// the client secret is shown once, in this answer.
pub async fn create_client(
    state: web::Data<AppState>,
    post: Post<CreateForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require(Permission::KeysWrite)?;
    let tenant = tenant_for(&state, &user, f.tenant.as_deref()).await?;
    let body = input(json!({
        "name": f.name.unwrap_or_default(),
        "permissions": (!f.permissions.is_empty()).then_some(f.permissions),
    }))?;
    let client = oauth::create(&state, &user.who, tenant.map(|t| TenantRef::Id(t.0)), body).await?;
    render(&state, &user, tenant, None, Some(client)).await
}

pub async fn revoke_client(
    state: web::Data<AppState>,
    path: web::Path<String>,
    post: Post<RevokeForm>,
) -> ConsoleResult<HttpResponse> {
    let (user, f) = (post.user, post.form);
    user.who.require(Permission::KeysWrite)?;
    let tenant = tenant_for(&state, &user, f.tenant.as_deref()).await?;
    oauth::revoke(&state, &user.who, tenant.map(|t| TenantRef::Id(t.0)), &path).await?;
    let q = tenant.map(|t| tenant_q(&user, t)).unwrap_or_default();
    Ok(see_other(&format!("/console/keys{q}")))
}
