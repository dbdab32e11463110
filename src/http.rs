//! HTTP plumbing shared by every route: body limits, actix's own extractor
//! errors turned into problem JSON, unknown routes and methods, health checks.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::db;
use crate::error::{problem_response, AppError};
use crate::state::AppState;

/// JSON bodies: size limit from config; every failure mode a problem response.
pub fn json_config(max_bytes: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(max_bytes)
        .error_handler(|err, _req| json_error(err).into())
}

fn json_error(err: JsonPayloadError) -> AppError {
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            AppError::PayloadTooLarge
        }
        JsonPayloadError::ContentType => {
            AppError::MalformedJson("Content-Type must be application/json.".into())
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => AppError::Validation {
            code: "validation_failed",
            detail: e.to_string(),
            errors: Vec::new(),
        },
        JsonPayloadError::Deserialize(e) => {
            AppError::MalformedJson(format!("The body is not valid JSON: {e}"))
        }
        other => AppError::MalformedJson(other.to_string()),
    }
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req| {
        AppError::Validation {
            code: "validation_failed",
            detail: format!("Invalid query string: {err}"),
            errors: Vec::new(),
        }
        .into()
    })
}

/// A path segment that does not parse names nothing that exists.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_err: PathError, _req| AppError::NotFound.into())
}

/// Gives actix's bare 404/405 (unknown route, wrong method) a problem body.
pub fn problem_for_bare_errors<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new()
        .handler(StatusCode::NOT_FOUND, bare_to_problem)
        .handler(StatusCode::METHOD_NOT_ALLOWED, bare_to_problem)
}

fn bare_to_problem<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let err = if res.status() == StatusCode::METHOD_NOT_ALLOWED {
        AppError::MethodNotAllowed
    } else {
        AppError::NotFound
    };
    let (req, _) = res.into_parts();
    let resp: HttpResponse<BoxBody> = actix_web::ResponseError::error_response(&err);
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, resp).map_into_right_body::<B>(),
    ))
}

pub async fn not_found(_req: HttpRequest) -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound)
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the database answers and every migration is applied.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ready = db::run(&state.pool, |conn| Ok(db::is_migrated(conn))).await;
    match ready {
        Ok(true) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Ok(false) => problem_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Database migrations are pending.".into(),
            None,
        ),
        Err(_) => problem_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The database is unreachable.".into(),
            None,
        ),
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}
