//! Template business rules: CRUD per tenant (each change audited as
//! `template.created|updated|deleted` in its transaction; `changes` names
//! the template and which parts changed, never their text), preview, and
//! rendering for the send path (which needs only `send`, not
//! `templates:read`).

use chrono::Utc;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::Connection;
use serde_json::json;
use uuid::Uuid;

use super::input::{variables, CreateTemplate, RenderRequest, UpdateTemplate};
use super::model::{self, TemplateRef, TemplateRow};
use super::render::Rendered;
use super::sandbox::Job;
use super::view::TemplateView;
use crate::audit::{self, Actor};
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
    actor: &Actor,
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
    let actor = actor.clone();
    let saved = db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let saved = model::insert(conn, std::slice::from_ref(&row)).map_err(name_conflict)?;
            let changes = json!({"name": row.name, "parts": parts(&row)});
            audit::record(
                conn,
                &actor,
                "template.created",
                Some(tenant.0),
                row.id,
                changes,
            )?;
            Ok(saved)
        })
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
    actor: &Actor,
    tenant: TenantId,
    r: TemplateRef,
    patch: UpdateTemplate,
) -> AppResult<TemplateView> {
    let actor = actor.clone();
    db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let mut row = model::find(conn, tenant, &r, true)?.ok_or(AppError::NotFound)?;
            let before = row.clone();
            patch.apply(&mut row)?;
            let saved = model::save(conn, &mut row).map_err(name_conflict)?;
            let mut changed = Vec::new();
            for (part, differs) in [
                ("subject", before.subject != saved.subject),
                ("html", before.html != saved.html),
                ("text", before.text != saved.text),
            ] {
                if differs {
                    changed.push(part);
                }
            }
            let mut changes = json!({"name": saved.name, "changed": changed});
            if before.name != saved.name {
                changes["renamed"] = json!({"from": before.name, "to": saved.name});
            }
            audit::record(
                conn,
                &actor,
                "template.updated",
                Some(tenant.0),
                saved.id,
                changes,
            )?;
            Ok(saved)
        })
    })
    .await
    .map(Into::into)
}

pub async fn delete(
    state: &AppState,
    actor: &Actor,
    tenant: TenantId,
    r: TemplateRef,
) -> AppResult<()> {
    let actor = actor.clone();
    db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let row = model::delete(conn, tenant, &r)?.ok_or(AppError::NotFound)?;
            let changes = json!({"name": row.name});
            audit::record(
                conn,
                &actor,
                "template.deleted",
                Some(tenant.0),
                row.id,
                changes,
            )?;
            Ok(())
        })
    })
    .await
}

/// The parts a template has (for its audit entry).
fn parts(row: &TemplateRow) -> Vec<&'static str> {
    let mut out = vec!["subject"];
    if row.html.is_some() {
        out.push("html");
    }
    if row.text.is_some() {
        out.push("text");
    }
    out
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
