//! JSON request bodies. A handler takes [`JsonBody`] as an extractor, which
//! reads nothing: the handler checks the caller's permission first, then asks
//! for the body, which is then checked in this order: media type (415),
//! size against `limits.max_request_bytes` (413, naming the limit), JSON
//! syntax (400), shape (422 `validation_failed` with `errors[]` naming each
//! field by its JSON path, see [`errors`]).

pub mod bounded;
pub mod errors;

use actix_web::dev::{Decompress, Payload};
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub use errors::{parse_json, parse_json_list};

/// The not-yet-read body of a request.
pub struct JsonBody {
    payload: Decompress<Payload>,
    media: Result<(), String>,
    declared: Option<usize>,
    limit: usize,
}

impl FromRequest for JsonBody {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map_or(0, |s| s.settings.limits.max_request_bytes);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        // Compressed bodies are limited by their decompressed size.
        let compressed = req.headers().contains_key(header::CONTENT_ENCODING);
        std::future::ready(Ok(JsonBody {
            payload: Decompress::from_headers(payload.take(), req.headers()),
            media: json_media_type(req),
            declared: if compressed { None } else { declared },
            limit,
        }))
    }
}

impl JsonBody {
    /// The body's bytes: declared as JSON and within the size limit.
    pub async fn bytes(mut self) -> AppResult<web::Bytes> {
        self.media.map_err(AppError::UnsupportedMediaType)?;
        if self.declared.is_some_and(|n| n > self.limit) {
            return Err(AppError::PayloadTooLarge { limit: self.limit });
        }
        let mut buf = web::BytesMut::with_capacity(self.declared.unwrap_or(0));
        while let Some(chunk) = self.payload.next().await {
            let chunk = chunk.map_err(|e| {
                AppError::MalformedJson(format!("The request body could not be read: {e}."))
            })?;
            if buf.len() + chunk.len() > self.limit {
                return Err(AppError::PayloadTooLarge { limit: self.limit });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// The body parsed as `T` (see the module comment for the checks).
    pub async fn parse<T: DeserializeOwned>(self) -> AppResult<T> {
        let bytes = self.bytes().await?;
        parse_json(&bytes)
    }
}

/// `application/json` or an `application/…+json` type such as
/// `application/merge-patch+json` (any parameters, e.g. `; charset=utf-8`),
/// or a message naming what was sent instead.
fn json_media_type(req: &HttpRequest) -> Result<(), String> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Err(
            "The request has no Content-Type header; send Content-Type: application/json.".into(),
        );
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    let essence_lower = essence.to_ascii_lowercase();
    let json = essence_lower == "application/json"
        || (essence_lower.starts_with("application/") && essence_lower.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(format!(
            "Content-Type {:?} is not supported; send Content-Type: application/json.",
            essence.chars().take(100).collect::<String>()
        ))
    }
}
