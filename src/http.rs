//! HTTP plumbing shared by every route: body limits, actix's own extractor
//! errors turned into problem JSON, unknown routes and methods, health checks.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use actix_web::HttpMessage;

use crate::db;
use crate::error::{problem_response, AppError};
use crate::limits::api::RateState;
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

/// Prometheus text; the queue depth is sampled from the database here (a
/// scrape never fails because of it: an unreachable database shows zeros).
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics_of(&state.pool).await
}

async fn metrics_of(pool: &crate::db::PgPool) -> HttpResponse {
    let depth = db::run(pool, |conn| Ok(crate::emails::model::queue_depth(conn)?))
        .await
        .unwrap_or_default();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render(&depth))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// The request span of `tracing-actix-web` without its per-error event
/// (errors are logged once by `AppError`); the access line is written by
/// [`finish`] inside the span, so it carries the request id.
pub struct QuietRootSpan;

impl tracing_actix_web::RootSpanBuilder for QuietRootSpan {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        tracing_actix_web::root_span!(level = tracing::Level::INFO, request)
    }

    fn on_request_end<B: MessageBody>(
        _span: tracing::Span,
        _outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
    }
}

/// Runs on every response: RateLimit headers, `x-request-id`, metrics by
/// route pattern, and one access log line (not for probes and scrapes).
pub fn finish<B>(res: &mut ServiceResponse<B>, elapsed: std::time::Duration) {
    let rate = res.request().extensions().get::<RateState>().copied();
    if let Some(rate) = rate {
        crate::limits::api::set_headers(res.headers_mut(), &rate);
    }
    let request_id = res
        .request()
        .extensions()
        .get::<tracing_actix_web::RequestId>()
        .map(|id| id.to_string());
    if let Some(id) = request_id.and_then(|id| header::HeaderValue::from_str(&id).ok()) {
        res.headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), id);
    }
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let method = res.request().method().to_string();
    let status = res.status().as_u16();
    crate::metrics::http(&route, &method, status, elapsed);
    if !matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics") {
        tracing::info!(
            method = %method,
            route = %route,
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    }
}

/// The worker role's own small HTTP listener (`worker.metrics_bind`):
/// `/metrics` and `/healthz` only.
pub fn worker_server(
    pool: crate::db::PgPool,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let pool = web::Data::new(pool);
    Ok(actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(pool.clone())
            .route("/healthz", web::get().to(healthz))
            .route(
                "/metrics",
                web::get().to(|pool: web::Data<crate::db::PgPool>| async move {
                    metrics_of(&pool).await
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}
