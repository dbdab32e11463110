//! Send and read routes: tenant style (`/v1/emails`), admin on behalf of a
//! tenant (`/v1/tenants/{id}/emails`), and platform style (admin key with
//! `tenant_id` in the body or query).

use actix_web::{web, HttpRequest, HttpResponse};

use super::service::{self, ListQuery, Reply};
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/emails")
            .route(web::post().to(send))
            .route(web::get().to(list)),
    )
    .service(web::resource("/v1/emails/batch").route(web::post().to(send_batch)))
    .service(web::resource("/v1/emails/{email}").route(web::get().to(get)))
    .service(
        web::resource("/v1/tenants/{tenant}/emails")
            .route(web::post().to(send_for_tenant))
            .route(web::get().to(list_for_tenant)),
    )
    .service(
        web::resource("/v1/tenants/{tenant}/emails/{email}").route(web::get().to(get_for_tenant)),
    );
}

/// The body must be declared JSON; anything else is a 400 like a bad body.
fn json_body<'a>(req: &HttpRequest, body: &'a web::Bytes) -> AppResult<&'a [u8]> {
    let is_json = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(AppError::MalformedJson(
            "Content-Type must be application/json.".into(),
        ));
    }
    Ok(body.as_ref())
}

fn idempotency_key(req: &HttpRequest) -> AppResult<Option<String>> {
    match req.headers().get("Idempotency-Key") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| AppError::invalid("Idempotency-Key", "must be printable ASCII")),
    }
}

fn respond((status, body): Reply) -> HttpResponse {
    HttpResponse::build(status).json(body)
}

async fn send(
    who: Principal,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> AppResult<HttpResponse> {
    let reply = service::send_one(
        &state,
        &who,
        None,
        json_body(&req, &body)?,
        idempotency_key(&req)?,
    )
    .await?;
    Ok(respond(reply))
}

async fn send_for_tenant(
    who: Principal,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> AppResult<HttpResponse> {
    who.require_admin(crate::domain::Permission::Send)?;
    let reply = service::send_one(
        &state,
        &who,
        Some(&path),
        json_body(&req, &body)?,
        idempotency_key(&req)?,
    )
    .await?;
    Ok(respond(reply))
}

async fn send_batch(
    who: Principal,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> AppResult<HttpResponse> {
    let reply = service::send_batch(
        &state,
        &who,
        json_body(&req, &body)?,
        idempotency_key(&req)?,
    )
    .await?;
    Ok(respond(reply))
}

async fn list(
    who: Principal,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> AppResult<HttpResponse> {
    let page = service::list(&state, &who, None, query.into_inner()).await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn list_for_tenant(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> AppResult<HttpResponse> {
    who.require_admin(crate::domain::Permission::EmailsRead)?;
    let page = service::list(&state, &who, Some(&path), query.into_inner()).await?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(serde::Deserialize)]
struct TenantQuery {
    tenant_id: Option<String>,
}

async fn get(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<TenantQuery>,
) -> AppResult<HttpResponse> {
    let detail = service::get(&state, &who, None, query.tenant_id.as_deref(), &path).await?;
    Ok(HttpResponse::Ok().json(detail))
}

async fn get_for_tenant(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    who.require_admin(crate::domain::Permission::EmailsRead)?;
    let (tenant, email) = path.into_inner();
    let detail = service::get(&state, &who, Some(&tenant), None, &email).await?;
    Ok(HttpResponse::Ok().json(detail))
}
