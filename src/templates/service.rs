//! Template business rules: CRUD per tenant, preview, and rendering for the
//! send path (which needs only `send`, not `templates:read`).

use chrono::Utc;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::Connection;
use uuid::Uuid;

use super::input::{variables, CreateTemplate, RenderRequest, UpdateTemplate};
use super::model::{self, TemplateRef, TemplateRow};
use super::render::Rendered;
use super::sandbox::Job;
use super::view::TemplateView;
use crate::db;
use crate::db::pagination::{Page, PageRequest};
use crate::domain::TenantId;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// The (tenant, name) unique constraint as a readable 409.
fn name_conflict(e: DieselError) -> AppError {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            AppError::conflict("A template with this name already exists.")
        }
        other => other.into(),
    }
}

pub async fn create(
    state: &AppState,
    tenant: TenantId,
    input: CreateTemplate,
) -> AppResult<TemplateView> {
    let now = Utc::now();
    let mut row = TemplateRow {
        tenant_id: tenant.0,
        id: Uuid::new_v4(),
        name: String::new(),
        subject: String::new(),
        html: None,
        text: None,
        created_at: now,
        updated_at: now,
    };
    UpdateTemplate::from(input).apply(&mut row)?;
    let saved = db::run(&state.pool, move |conn| {
        model::insert(conn, std::slice::from_ref(&row)).map_err(name_conflict)
    })
    .await?;
    saved
        .into_iter()
        .next()
        .map(Into::into)
        .ok_or_else(|| AppError::internal("template insert", "no row returned"))
}

pub async fn list(
    state: &AppState,
    tenant: TenantId,
    page: PageRequest,
) -> AppResult<Page<TemplateView>> {
    let rows = db::run(&state.pool, move |conn| {
        Ok(model::list(conn, tenant, page)?)
    })
    .await?;
    Ok(Page::from_rows(
        rows,
        page,
        TemplateRow::position,
        TemplateView::from,
    ))
}

pub async fn get(state: &AppState, tenant: TenantId, r: TemplateRef) -> AppResult<TemplateView> {
    db::run(&state.pool, move |conn| {
        model::find(conn, tenant, &r, false)?.ok_or(AppError::NotFound)
    })
    .await
    .map(Into::into)
}

pub async fn update(
    state: &AppState,
    tenant: TenantId,
    r: TemplateRef,
    patch: UpdateTemplate,
) -> AppResult<TemplateView> {
    db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let mut row = model::find(conn, tenant, &r, true)?.ok_or(AppError::NotFound)?;
            patch.apply(&mut row)?;
            model::save(conn, &mut row).map_err(name_conflict)
        })
    })
    .await
    .map(Into::into)
}

pub async fn delete(state: &AppState, tenant: TenantId, r: TemplateRef) -> AppResult<()> {
    let n = db::run(&state.pool, move |conn| {
        Ok(model::delete(conn, tenant, &r)?)
    })
    .await?;
    if n == 0 {
        return Err(AppError::NotFound);
    }
    Ok(())
}

/// `POST /v1/templates/{id}/render`: the template with these variables.
pub async fn preview(
    state: &AppState,
    tenant: TenantId,
    r: TemplateRef,
    req: RenderRequest,
) -> AppResult<Rendered> {
    let vars = variables("variables", req.variables)?;
    let t = db::run(&state.pool, move |conn| {
        model::find(conn, tenant, &r, false)?.ok_or(AppError::NotFound)
    })
    .await?;
    render_in_sandbox(state, tenant, t, vars, String::new()).await
}

/// Renders a stored template in the sandbox (a child process with a memory
/// and time limit) in the tenant's turn, never holding a database connection
/// meanwhile.
async fn render_in_sandbox(
    state: &AppState,
    tenant: TenantId,
    t: TemplateRow,
    variables: Box<serde_json::value::RawValue>,
    prefix: String,
) -> AppResult<Rendered> {
    let job = Job {
        subject: t.subject,
        html: t.html,
        text: t.text,
        variables,
        prefix,
    };
    state.renderer.render(tenant, job).await
}

/// Renders the tenant's template named in a send body. An unknown template
/// is a 422 on the `template` field (the body refers to it; the URL is fine).
pub async fn render_for_send(
    state: &AppState,
    tenant: TenantId,
    name_or_id: &str,
    vars: Box<serde_json::value::RawValue>,
    prefix: &str,
) -> AppResult<Rendered> {
    let r = TemplateRef::parse(name_or_id);
    let field = format!("{prefix}template");
    let t = db::run(&state.pool, move |conn| {
        model::find(conn, tenant, &r, false)?
            .ok_or_else(|| AppError::invalid(field, "names no template of this tenant"))
    })
    .await?;
    render_in_sandbox(state, tenant, t, vars, prefix.to_string()).await
}
