//! The session cookie, the `ConsoleUser` extractor, CSRF-checked forms and
//! the console's error pages.

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::sessions;
use super::users::ConsoleUser;
use crate::error::AppError;
use crate::state::AppState;

pub const COOKIE: &str = "postline_console";
/// The sign-in form's token before there is a session (double submit).
pub const LOGIN_COOKIE: &str = "postline_console_login";
/// Largest console form body; forms are a few fields.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// What a console request can end in besides a page.
#[derive(Debug)]
pub enum ConsoleError {
    /// No (live) session: a GET is sent to the sign-in page, a POST gets 403.
    SignIn {
        post: bool,
    },
    /// A POST without the session's form token.
    Csrf,
    /// `console.require_totp_for_admins` and an admin without TOTP: a GET
    /// is sent to the account page, a POST gets 403.
    TotpRequired {
        post: bool,
    },
    /// The form is larger than [`MAX_FORM_BYTES`].
    FormTooLarge,
    /// The form is not `application/x-www-form-urlencoded` or does not parse.
    BadForm(String),
    App(AppError),
}

impl From<AppError> for ConsoleError {
    fn from(e: AppError) -> Self {
        ConsoleError::App(e)
    }
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleError::SignIn { .. } => f.write_str("sign-in required"),
            ConsoleError::Csrf => f.write_str("missing or wrong form token"),
            ConsoleError::TotpRequired { .. } => f.write_str("TOTP required for admins"),
            ConsoleError::FormTooLarge => f.write_str("form too large"),
            ConsoleError::BadForm(why) => write!(f, "bad form: {why}"),
            ConsoleError::App(e) => write!(f, "{e}"),
        }
    }
}

pub type ConsoleResult<T> = Result<T, ConsoleError>;

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::SignIn { post: false } => StatusCode::SEE_OTHER,
            ConsoleError::SignIn { post: true } | ConsoleError::Csrf => StatusCode::FORBIDDEN,
            ConsoleError::TotpRequired { post: false } => StatusCode::SEE_OTHER,
            ConsoleError::TotpRequired { post: true } => StatusCode::FORBIDDEN,
            ConsoleError::FormTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ConsoleError::BadForm(_) => StatusCode::BAD_REQUEST,
            ConsoleError::App(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ConsoleError::SignIn { post: false } = self {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/console/login"))
                .insert_header(super::render::csp())
                .finish();
        }
        if let ConsoleError::TotpRequired { post: false } = self {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/console/account"))
                .insert_header(super::render::csp())
                .finish();
        }
        let status = self.status_code();
        let (title, detail, fields) = match self {
            ConsoleError::TotpRequired { .. } => (
                "Set up TOTP first",
                "This console requires a second factor for admins: set up TOTP on the account page."
                    .into(),
                Vec::new(),
            ),
            ConsoleError::SignIn { .. } => ("Sign-in required", self.to_string(), Vec::new()),
            ConsoleError::Csrf => (
                "Forbidden",
                "This form is missing its token or the session changed; reload the page.".into(),
                Vec::new(),
            ),
            ConsoleError::FormTooLarge => ("Form too large", self.to_string(), Vec::new()),
            ConsoleError::BadForm(why) => ("Bad form", why.clone(), Vec::new()),
            ConsoleError::App(e) => app_error_text(e),
        };
        let html = super::render::error_page(status.as_u16(), title, &detail, &fields);
        let mut resp = super::render::html(status, html);
        if let ConsoleError::App(AppError::TooManyRequests {
            retry_after_secs, ..
        }) = self
        {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(*retry_after_secs),
            );
        }
        resp
    }
}

/// Title, sentence and field messages of an API error, for a page. 5xx
/// reveal nothing (the log has it).
fn app_error_text(e: &AppError) -> (&'static str, String, Vec<String>) {
    match e {
        AppError::NotFound => ("Not found", "There is nothing here.".into(), Vec::new()),
        AppError::Forbidden { detail, .. } => ("Forbidden", detail.clone(), Vec::new()),
        AppError::Unauthorized | AppError::CredentialMissing(_) => {
            ("Forbidden", "Not allowed.".into(), Vec::new())
        }
        AppError::Conflict { detail, .. } => ("Conflict", detail.clone(), Vec::new()),
        AppError::Validation { detail, errors, .. } => (
            "Please check the form",
            detail.clone(),
            errors
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect(),
        ),
        AppError::TooManyRequests { detail, .. } => ("Too many requests", detail.clone(), vec![]),
        e if e.status_code().is_server_error() => (
            "Something went wrong",
            "The server could not do this; try again.".into(),
            Vec::new(),
        ),
        other => ("Error", other.to_string(), Vec::new()),
    }
}

fn state_of(req: &HttpRequest) -> Result<web::Data<AppState>, ConsoleError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| AppError::internal("console", "AppState not registered").into())
}

/// `Secure` when the request came over TLS (directly, or per the proxy's
/// `X-Forwarded-Proto` when `auth.trust_x_forwarded_for` says it is trusted).
pub fn is_tls(req: &HttpRequest, trust_proxy: bool) -> bool {
    let info = req.connection_info();
    if trust_proxy {
        info.scheme() == "https"
    } else {
        req.app_config().secure()
    }
}

/// A cookie of the console: HttpOnly, SameSite=Strict, path /console.
pub fn cookie<'a>(name: &'a str, value: String, secure: bool) -> Cookie<'a> {
    Cookie::build(name, value)
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .finish()
}

/// The same cookie, expired.
pub fn removal(name: &str, secure: bool) -> Cookie<'_> {
    let mut c = cookie(name, String::new(), secure);
    c.make_removal();
    c
}

/// The pages an admin without TOTP may use when it is required: the account
/// page (to set it up) with its forms, and sign-out.
fn totp_exempt(path: &str) -> bool {
    let under = |p: &str| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under("/console/account") || under("/console/logout")
}

impl FromRequest for ConsoleUser {
    type Error = ConsoleError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let post = req.method() != Method::GET && req.method() != Method::HEAD;
        let token = req.cookie(COOKIE).map(|c| c.value().to_string());
        let state = state_of(req);
        let req = req.clone();
        Box::pin(async move {
            let state = state?;
            let token = token.ok_or(ConsoleError::SignIn { post })?;
            let user = sessions::session(&state.pool, &token)
                .await?
                .ok_or(ConsoleError::SignIn { post })?;
            if state.settings.console.require_totp_for_admins
                && user.is_admin()
                && !user.totp
                && !totp_exempt(req.path())
            {
                return Err(ConsoleError::TotpRequired { post });
            }
            req.extensions_mut().insert(match user.tenant() {
                Some(t) => crate::http::Caller::Tenant(t.0),
                None => crate::http::Caller::Admin,
            });
            Ok(user)
        })
    }
}

/// A POSTed form of a signed-in user: the session is checked first (no
/// session: 403 before the body is read), then the body (at most
/// [`MAX_FORM_BYTES`]), then its `csrf` field against the session's token
/// (403), and only then the form is parsed into `T`.
pub struct Post<T> {
    pub user: ConsoleUser,
    pub form: T,
}

/// Reads a urlencoded body of at most [`MAX_FORM_BYTES`].
pub async fn read_form(req: &HttpRequest, mut payload: Payload) -> ConsoleResult<Vec<u8>> {
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("application/x-www-form-urlencoded") {
        return Err(ConsoleError::BadForm(
            "send the form as application/x-www-form-urlencoded".into(),
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ConsoleError::BadForm(e.to_string()))?;
        if body.len() + chunk.len() > MAX_FORM_BYTES {
            return Err(ConsoleError::FormTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The value of one field of a urlencoded body.
pub fn field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Compares form tokens in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    use subtle_eq::ct_eq;
    ct_eq(a.as_bytes(), b.as_bytes())
}

mod subtle_eq {
    /// Constant-time equality of two byte strings (length leaks, content not).
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Post<T> {
    type Error = ConsoleError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let user = ConsoleUser::from_request(req, &mut Payload::None);
        let payload = payload.take();
        let req = req.clone();
        Box::pin(async move {
            let user = user.await?;
            let body = read_form(&req, payload).await?;
            let sent = field(&body, "csrf").unwrap_or_default();
            if !same_token(&sent, user.csrf()) {
                return Err(ConsoleError::Csrf);
            }
            let form = parse_form::<T>(&body)?;
            Ok(Post { user, form })
        })
    }
}

/// Parses a urlencoded body into `T`: fields as strings, empty ones left
/// out (so `Option` fields are `None`), `name[]` fields (check boxes)
/// collected into a list `name`; unknown fields, such as `csrf`, ignored
/// unless `T` refuses them.
pub fn parse_form<T: DeserializeOwned>(body: &[u8]) -> ConsoleResult<T> {
    use serde_json::Value;
    let mut map = serde_json::Map::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if let Some(list) = k.strip_suffix("[]") {
            let entry = map
                .entry(list.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = entry {
                items.push(Value::String(v.into_owned()));
            }
        } else if !v.is_empty() {
            map.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| ConsoleError::BadForm(e.to_string()))
}
