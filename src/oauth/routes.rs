//! `POST /oauth/token`, `GET /.well-known/jwks.json` and the client routes.

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::clients::{self, ClientView, CreateClient};
use super::form::{self, TokenError, MAX_BODY_BYTES};
use super::signing::Jwks;
use crate::auth::Principal;
use crate::body::JsonBody;
use crate::db::pagination::{Page, PageQuery};
use crate::domain::Permission;
use crate::error::{AppResult, Problem};
use crate::routes::{Access, Endpoint};
use crate::state::AppState;
use crate::tenants::model::TenantRef;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(Method::POST, "/oauth/token", Access::Public, || {
            web::route().to(token)
        }),
        Endpoint::new(
            Method::GET,
            "/.well-known/jwks.json",
            Access::Public,
            || web::route().to(jwks),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/oauth-clients",
            Access::Admin(Permission::KeysWrite),
            || web::route().to(list_platform),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/oauth-clients",
            Access::Admin(Permission::KeysWrite),
            || web::route().to(create_platform),
        ),
        Endpoint::new(
            Method::DELETE,
            "/v1/oauth-clients/{id}",
            Access::Admin(Permission::KeysWrite),
            || web::route().to(revoke_platform),
        ),
        Endpoint::new(
            Method::GET,
            "/v1/tenants/{tenant}/oauth-clients",
            Access::Admin(Permission::KeysWrite),
            || web::route().to(list_tenant),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/tenants/{tenant}/oauth-clients",
            Access::Admin(Permission::KeysWrite),
            || web::route().to(create_tenant),
        ),
        Endpoint::new(
            Method::DELETE,
            "/v1/tenants/{tenant}/oauth-clients/{id}",
            Access::Admin(Permission::KeysWrite),
            || web::route().to(revoke_tenant),
        ),
    ]
}

/// The form of a token request (RFC 6749 §4.4.2).
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenForm {
    /// Must be `client_credentials`.
    grant_type: String,
    /// Space-separated permissions, a subset of the client's (default: all of them).
    scope: Option<String>,
    /// With `client_secret`, instead of HTTP Basic.
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// RFC 6749 §5.1.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
}

/// RFC 6749 §5.2.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `invalid_scope`,
    /// `unsupported_grant_type`, `slow_down` (429), `temporarily_unavailable` (503).
    pub error: &'static str,
    pub error_description: String,
}

fn token_error(e: &TokenError) -> HttpResponse {
    let status = match e {
        TokenError::InvalidClient { .. } => StatusCode::UNAUTHORIZED,
        TokenError::SlowDown { .. } => StatusCode::TOO_MANY_REQUESTS,
        TokenError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut resp = HttpResponse::build(status);
    resp.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    if let TokenError::InvalidClient { .. } = e {
        resp.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"postline\""));
    }
    if let TokenError::SlowDown { retry_after_secs } = e {
        resp.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
    }
    let mut resp = resp.json(TokenErrorBody {
        error: e.code(),
        error_description: e.description(),
    });
    resp.extensions_mut().insert(crate::http::ProtocolErrorBody);
    resp
}

/// Reads at most [`MAX_BODY_BYTES`]; a longer body is refused unread.
async fn read_capped(mut payload: web::Payload) -> Result<Vec<u8>, TokenError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| TokenError::InvalidRequest("The body could not be read."))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(TokenError::InvalidRequest("The body is too large."));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// OAuth 2.0 token endpoint, client credentials grant (RFC 6749 §4.4): client
/// authentication by HTTP Basic or `client_id`/`client_secret` in the form.
#[utoipa::path(post, path = "/oauth/token", tag = "OAuth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = TokenResponse, description = "An RFC 9068 access token"),
        (status = 400, body = TokenErrorBody, description = "invalid_request, invalid_grant, invalid_scope, unsupported_grant_type"),
        (status = 401, body = TokenErrorBody, description = "invalid_client"),
        (status = 429, body = TokenErrorBody, description = "slow_down: the per-client limit, or too many failed client authentications from this address"),
    ),
    security(("basic" = [])))]
pub async fn token(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let header_str = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let (content_type, authorization) = (
        header_str(header::CONTENT_TYPE).map(str::to_string),
        header_str(header::AUTHORIZATION).map(str::to_string),
    );
    let from = crate::auth::extract::client_ip(&req, state.settings.auth.trust_x_forwarded_for);
    let result = async {
        let body = read_capped(payload).await?;
        let parsed = form::parse(content_type.as_deref(), authorization.as_deref(), &body)?;
        state.oauth.issue(parsed, from).await
    }
    .await;
    match result {
        Ok(issued) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(TokenResponse {
                access_token: issued.access_token,
                token_type: "Bearer",
                expires_in: issued.expires_in,
                scope: issued.scope,
            }),
        Err(e) => token_error(&e),
    }
}

/// The keys that verify access tokens (RFC 7517; Ed25519 per RFC 8037),
/// including keys rotated out but not yet retired.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "OAuth",
    responses((status = 200, body = Jwks), (status = "5XX", body = Problem)))]
pub async fn jwks(state: web::Data<AppState>) -> AppResult<HttpResponse> {
    let keys = state.oauth.jwks().await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=60"))
        .json(keys.as_ref()))
}

/// Create a platform client (acts as an admin key limited to its
/// permissions); `client_secret` is shown in this response only.
#[utoipa::path(post, path = "/v1/oauth-clients", tag = "OAuth", request_body = CreateClient,
    responses((status = 201, body = ClientView), (status = "4XX", body = Problem)),
    security(("bearer" = ["keys:write"])))]
pub async fn create_platform(
    who: Principal,
    state: web::Data<AppState>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let input: CreateClient = body.parse().await?;
    let client = clients::create(&state, &who, None, input).await?;
    Ok(HttpResponse::Created().json(client))
}

/// List platform clients (never their secrets).
#[utoipa::path(get, path = "/v1/oauth-clients", tag = "OAuth", params(PageQuery),
    responses((status = 200, body = Page<ClientView>), (status = "4XX", body = Problem)),
    security(("bearer" = ["keys:write"])))]
pub async fn list_platform(
    who: Principal,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let page = clients::list(&state.pool, None, query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Revoke a platform client; its tokens stop within `auth.cache_ttl_secs`.
#[utoipa::path(delete, path = "/v1/oauth-clients/{id}", tag = "OAuth",
    params(("id" = Uuid, Path, description = "Client id (the `id` field)")),
    responses((status = 204), (status = "4XX", body = Problem)),
    security(("bearer" = ["keys:write"])))]
pub async fn revoke_platform(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    clients::revoke(&state, &who, None, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Create a client of a tenant (acts as that tenant's key); `client_secret`
/// is shown in this response only.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/oauth-clients", tag = "OAuth", request_body = CreateClient,
    params(("tenant" = String, Path, description = "Tenant id or external_id")),
    responses((status = 201, body = ClientView), (status = "4XX", body = Problem)),
    security(("bearer" = ["keys:write"])))]
pub async fn create_tenant(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let tenant = Some(TenantRef::parse(&path));
    let input: CreateClient = body.parse().await?;
    let client = clients::create(&state, &who, tenant, input).await?;
    Ok(HttpResponse::Created().json(client))
}

/// List a tenant's clients (never their secrets).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/oauth-clients", tag = "OAuth",
    params(("tenant" = String, Path, description = "Tenant id or external_id"), PageQuery),
    responses((status = 200, body = Page<ClientView>), (status = "4XX", body = Problem)),
    security(("bearer" = ["keys:write"])))]
pub async fn list_tenant(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let tenant = Some(TenantRef::parse(&path));
    let page = clients::list(&state.pool, tenant, query.validate()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Revoke a tenant's client; its tokens stop within `auth.cache_ttl_secs`.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/oauth-clients/{id}", tag = "OAuth",
    params(("tenant" = String, Path, description = "Tenant id or external_id"), ("id" = Uuid, Path, description = "Client id (the `id` field)")),
    responses((status = 204), (status = "4XX", body = Problem)),
    security(("bearer" = ["keys:write"])))]
pub async fn revoke_tenant(
    who: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    who.require_admin(Permission::KeysWrite)?;
    let (tenant, id) = path.into_inner();
    clients::revoke(&state, &who, Some(TenantRef::parse(&tenant)), &id).await?;
    Ok(HttpResponse::NoContent().finish())
}
