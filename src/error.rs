//! The one error type of the API, rendered as RFC 9457 problem JSON.
//! 5xx bodies reveal nothing; their cause chain goes to the log.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

pub type AppResult<T> = Result<T, AppError>;

/// One field-level validation message, e.g. `{"field": "to[0]", "message": "..."}`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// Every authentication failure looks the same from outside.
    #[error("unauthorized")]
    Unauthorized,
    /// No credential in the request, or one not in the Bearer scheme: the
    /// detail says how to send it (nothing about any key is revealed).
    #[error("unauthorized: {0}")]
    CredentialMissing(&'static str),
    #[error("forbidden ({code}): {detail}")]
    Forbidden { code: &'static str, detail: String },
    #[error("not found")]
    NotFound,
    #[error("conflict ({code}): {detail}")]
    Conflict { code: &'static str, detail: String },
    /// `limit`: the configured maximum body size in bytes.
    #[error("payload too large (limit {limit} bytes)")]
    PayloadTooLarge { limit: usize },
    /// The body is not declared as JSON; the message names what was sent.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("validation failed ({code}): {detail}")]
    Validation {
        code: &'static str,
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("rate limited ({code})")]
    TooManyRequests {
        code: &'static str,
        detail: String,
        retry_after_secs: u64,
    },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    /// A 422 `validation_failed` naming one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let error = FieldError::new(field, message);
        AppError::Validation {
            code: "validation_failed",
            detail: format!("{}: {}", error.field, error.message),
            errors: vec![error],
        }
    }

    /// A 422 `validation_failed` with several field errors.
    pub fn invalid_fields(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        AppError::Validation {
            code: "validation_failed",
            detail,
            errors,
        }
    }

    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        AppError::Forbidden {
            code,
            detail: detail.into(),
        }
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        AppError::Conflict {
            code: "conflict",
            detail: detail.into(),
        }
    }

    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        AppError::Internal(anyhow::anyhow!("{context}: {err}"))
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::MalformedJson(_) => "malformed_json",
            AppError::Unauthorized | AppError::CredentialMissing(_) => "unauthorized",
            AppError::Forbidden { code, .. } => code,
            AppError::NotFound => "not_found",
            AppError::Conflict { code, .. } => code,
            AppError::PayloadTooLarge { .. } => "payload_too_large",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::Validation { code, .. } => code,
            AppError::TooManyRequests { code, .. } => code,
            AppError::MethodNotAllowed => "method_not_allowed",
            AppError::Unavailable(_) => "unavailable",
            AppError::Internal(_) => "internal_error",
        }
    }

    pub fn public_detail(&self) -> String {
        match self {
            AppError::MalformedJson(d) | AppError::UnsupportedMediaType(d) => d.clone(),
            AppError::Unauthorized => "A valid API key is required.".into(),
            AppError::CredentialMissing(how) => (*how).into(),
            AppError::Forbidden { detail, .. }
            | AppError::Conflict { detail, .. }
            | AppError::Validation { detail, .. }
            | AppError::TooManyRequests { detail, .. } => detail.clone(),
            AppError::NotFound => "The requested resource does not exist.".into(),
            AppError::PayloadTooLarge { limit } => format!(
                "The request body exceeds the limit of {} (limits.max_request_bytes).",
                byte_size(*limit)
            ),
            AppError::MethodNotAllowed => "This method is not allowed on this resource.".into(),
            AppError::Unavailable(_) => "The service is temporarily unavailable.".into(),
            AppError::Internal(_) => "An internal error occurred.".into(),
        }
    }
}

/// `10485760 bytes (10 MiB)`; whole KiB/MiB only, so the figure stays exact.
fn byte_size(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    match n {
        n if n >= MIB && n % MIB == 0 => format!("{n} bytes ({} MiB)", n / MIB),
        n if n >= KIB && n % KIB == 0 => format!("{n} bytes ({} KiB)", n / KIB),
        n => format!("{n} bytes"),
    }
}

/// RFC 9457 problem details, as every error response carries them.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// A stable machine-readable code, e.g. `validation_failed`.
    pub code: String,
    pub detail: String,
    /// Field-level messages of a validation error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// Builds a problem response for any status; used for actix's own errors too.
pub fn problem_response(
    status: StatusCode,
    code: &str,
    detail: String,
    errors: Option<&[FieldError]>,
) -> HttpResponse {
    let body = Problem {
        kind: format!("https://postline.dev/problems/{}", code.replace('_', "-")),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        code: code.to_string(),
        detail,
        errors: errors.map(<[FieldError]>::to_vec),
    };
    let mut resp = HttpResponse::build(status);
    resp.insert_header((header::CONTENT_TYPE, "application/problem+json"));
    if status == StatusCode::UNAUTHORIZED {
        resp.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
    }
    resp.body(serde_json::to_string(&body).unwrap_or_default())
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized | AppError::CredentialMissing(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Conflict { .. } => StatusCode::CONFLICT,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AppError::Internal(e) => tracing::error!(error = %format!("{e:#}"), "internal error"),
            AppError::Unavailable(e) => tracing::warn!(error = %e, "service unavailable"),
            _ => {}
        }
        let errors = match self {
            AppError::Validation { errors, .. } if !errors.is_empty() => Some(errors.as_slice()),
            _ => None,
        };
        let mut resp = problem_response(
            self.status_code(),
            self.code(),
            self.public_detail(),
            errors,
        );
        if let AppError::TooManyRequests {
            retry_after_secs, ..
        } = self
        {
            if let Ok(v) = header::HeaderValue::from_str(&retry_after_secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::NotFound => AppError::NotFound,
            // The constraint's name is the schema's, not the tenant's: it
            // goes to the log only.
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                tracing::info!(
                    constraint = info.constraint_name().unwrap_or("?"),
                    table = info.table_name().unwrap_or("?"),
                    "unique violation answered 409"
                );
                AppError::conflict("A resource with these values already exists.")
            }
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
                AppError::Unavailable("database connection closed".into())
            }
            // libpq could not even send the query: the connection is gone
            // ("no connection to the server").
            Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _) => {
                AppError::Unavailable("database connection lost".into())
            }
            // A connection lost mid-transaction leaves diesel's transaction
            // manager broken (the ROLLBACK failed too): the next transaction
            // on that connection fails with this. It is the same outage.
            Error::BrokenTransactionManager => {
                AppError::Unavailable("database connection broken".into())
            }
            // The COMMIT failed and so did the ROLLBACK: the commit error
            // says why (a closed connection during an outage).
            Error::RollbackErrorOnCommit { commit_error, .. } => AppError::from(*commit_error),
            other => AppError::Internal(anyhow::Error::new(other).context("database query")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Info;
    impl diesel::result::DatabaseErrorInformation for Info {
        fn message(&self) -> &str {
            "duplicate key value violates unique constraint \"secret_schema_idx\""
        }
        fn details(&self) -> Option<&str> {
            Some("Key (x)=(1) already exists.")
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            Some("secret_table")
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            Some("secret_schema_idx")
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    /// Finding 5: a 409 names no constraint, table or key value.
    #[test]
    fn unique_violations_name_nothing_of_the_schema() {
        use diesel::result::{DatabaseErrorKind, Error};
        let e = AppError::from(Error::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new(Info),
        ));
        assert_eq!(e.status_code(), StatusCode::CONFLICT);
        let detail = e.public_detail();
        for leak in ["secret_schema_idx", "secret_table", "Key (x)"] {
            assert!(!detail.contains(leak), "{detail}");
        }
    }

    /// Found by the Postgres drill: requests retried on a connection lost
    /// mid-transaction answered 500 instead of 503.
    #[test]
    fn a_connection_lost_mid_transaction_is_unavailable_not_internal() {
        use diesel::result::Error;
        let broken = AppError::from(Error::BrokenTransactionManager);
        assert_eq!(broken.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(broken.code(), "unavailable");
        let commit = AppError::from(Error::RollbackErrorOnCommit {
            rollback_error: Box::new(Error::BrokenTransactionManager),
            commit_error: Box::new(Error::BrokenTransactionManager),
        });
        assert_eq!(commit.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        let other = AppError::from(Error::RollbackErrorOnCommit {
            rollback_error: Box::new(Error::RollbackTransaction),
            commit_error: Box::new(Error::AlreadyInTransaction),
        });
        assert_eq!(other.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
