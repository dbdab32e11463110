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

use actix_web::http::Method;

use crate::db;
use crate::error::{problem_response, AppError, Problem};
use crate::limits::api::RateState;
use crate::routes::{Access, Endpoint};
use crate::state::AppState;

/// JSON bodies: size limit from config; every failure mode a problem response.
pub fn json_config(max_bytes: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(max_bytes)
        .error_handler(move |err, _req| json_error(err, max_bytes).into())
}

/// For a handler that still takes actix's `web::Json` (the API's handlers
/// take [`crate::body::JsonBody`], whose errors name the field).
fn json_error(err: JsonPayloadError, max_bytes: usize) -> AppError {
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            AppError::PayloadTooLarge { limit: max_bytes }
        }
        JsonPayloadError::ContentType => {
            AppError::UnsupportedMediaType("Content-Type must be application/json.".into())
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

/// A query string that does not deserialize: 422.
pub fn query_error(err: QueryPayloadError) -> AppError {
    AppError::Validation {
        code: "validation_failed",
        detail: format!("Invalid query string: {err}"),
        errors: Vec::new(),
    }
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err: QueryPayloadError, _req| query_error(err).into())
}

/// A path segment that does not parse names nothing that exists.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_err: PathError, _req| AppError::NotFound.into())
}

/// Gives actix's bare errors a problem body: 404/405 (unknown route, wrong
/// method), and every other error status actix answers itself with plain
/// text, e.g. 413 from the `Bytes` extractor's size limit (found by the
/// input drill). Responses that are problem JSON already pass unchanged.
/// A response extension for an error body some protocol prescribes (the
/// RFC 6749 JSON of `POST /oauth/token`): such responses are not rewritten.
pub struct ProtocolErrorBody;

pub fn problem_for_bare_errors<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(bare_to_problem)
}

fn bare_to_problem<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if is_problem || res.response().extensions().contains::<ProtocolErrorBody>() {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (req, _) = res.into_parts();
    let err = match status {
        StatusCode::NOT_FOUND => Some(AppError::NotFound),
        StatusCode::METHOD_NOT_ALLOWED => Some(AppError::MethodNotAllowed),
        StatusCode::PAYLOAD_TOO_LARGE => Some(AppError::PayloadTooLarge {
            limit: req
                .app_data::<web::Data<AppState>>()
                .map_or(0, |s| s.settings.limits.max_request_bytes),
        }),
        _ => None,
    };
    let resp: HttpResponse<BoxBody> = match err {
        Some(err) => actix_web::ResponseError::error_response(&err),
        // Other statuses keep their code; the body says no more than it.
        None => {
            let reason = status.canonical_reason().unwrap_or("Error");
            let code = if status.is_server_error() {
                "internal_error".to_string()
            } else {
                reason.to_ascii_lowercase().replace([' ', '-'], "_")
            };
            problem_response(status, &code, format!("{reason}."), None)
        }
    };
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, resp).map_into_right_body::<B>(),
    ))
}

pub async fn not_found(_req: HttpRequest) -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound)
}

/// The process is up (liveness; never touches the database).
/// A browser opening the base URL lands on the console (which asks it to
/// sign in); the API lives under `/v1`, its reference at `/docs`.
#[utoipa::path(get, path = "/", tag = "Operations",
    responses((status = 303, description = "Redirect to the web console at /console (the API reference is at /docs)")))]
pub async fn root() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/console"))
        .finish()
}

#[utoipa::path(get, path = "/healthz", tag = "Operations", responses((status = 200, description = "Up")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the database answers and every migration is applied.
#[utoipa::path(get, path = "/readyz", tag = "Operations",
    responses((status = 200, description = "Ready"), (status = 503, body = Problem)))]
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

/// Prometheus text; the queue depth comes from a count cached for
/// `metrics.queue_depth_secs` (a scrape never fails because of it: an
/// unreachable database shows zeros).
#[utoipa::path(get, path = "/metrics", tag = "Operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics_of(&state.queue_depth).await
}

async fn metrics_of(queue: &crate::metrics::QueueDepth) -> HttpResponse {
    let depth = queue.get().await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render(&depth))
}

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(Method::GET, "/", Access::Public, || web::route().to(root)),
        Endpoint::new(Method::GET, "/healthz", Access::Public, || {
            web::route().to(healthz)
        }),
        Endpoint::new(Method::GET, "/readyz", Access::Public, || {
            web::route().to(readyz)
        }),
        Endpoint::new(Method::GET, "/metrics", Access::Public, || {
            web::route().to(metrics)
        }),
    ]
}

/// The request span: the request id alone (every line of a request carries
/// it; method, route and status are in the access line). No per-error event
/// (errors are logged once by `AppError`); the access line is written by
/// [`finish`] inside the span.
pub struct QuietRootSpan;

impl tracing_actix_web::RootSpanBuilder for QuietRootSpan {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        let id = request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| id.to_string())
            .unwrap_or_default();
        tracing::info_span!("request", id = %id)
    }

    fn on_request_end<B: MessageBody>(
        _span: tracing::Span,
        _outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
    }
}

/// Who called, for the access line: set by the `Principal` extractor once
/// the key is verified (`-` when no key was accepted).
#[derive(Clone, Copy, Debug)]
pub enum Caller {
    Admin,
    Tenant(uuid::Uuid),
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Admin => f.write_str("admin"),
            Caller::Tenant(id) => write!(f, "{id}"),
        }
    }
}

/// Runs on every response: RateLimit headers, `x-request-id`, metrics by
/// route pattern, and one compact access line (not for probes and scrapes):
/// method, route pattern, status, latency, tenant; the span adds the id.
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
        let tenant = res
            .request()
            .extensions()
            .get::<Caller>()
            .map_or_else(|| "-".to_string(), Caller::to_string);
        let latency_ms = (elapsed.as_secs_f64() * 10_000.0).round() / 10.0;
        tracing::info!(
            method = %method,
            route = %route,
            status,
            latency_ms,
            tenant = %tenant,
            "request"
        );
    }
}

/// The worker role's own small HTTP listener (`worker.metrics_bind`):
/// `/metrics` and `/healthz` only.
pub fn worker_server(
    queue: crate::metrics::QueueDepth,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let queue = web::Data::new(queue);
    Ok(actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(queue.clone())
            .route("/healthz", web::get().to(healthz))
            .route(
                "/metrics",
                web::get().to(|q: web::Data<crate::metrics::QueueDepth>| async move {
                    metrics_of(&q).await
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}
