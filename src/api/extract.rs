//! A JSON body extractor whose rejections are the service's JSON errors, naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Like `axum::Json`, but a wrong content type is 415, an oversized body 413, malformed JSON
/// 400 and a well-formed body with wrong or missing fields 422 with the field named.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(&request) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with the header Content-Type: application/json",
            ));
        }

        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is larger than the server's limit (server.body_limit_bytes, or server.batch_body_limit_bytes for the batch endpoints); send a shorter body or split it into batches")
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("failed to read the request body: {rejection}"))
            }
        })?;

        // serde reads a struct from an array too (by position); every request body here is an
        // object, so anything else is rejected first.
        if bytes.iter().find(|byte| !byte.is_ascii_whitespace()).is_some_and(|first| *first != b'{') {
            return Err(match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", "the body must be a JSON object"),
                Err(err) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not valid JSON: {err}")),
            });
        }
        let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(deserializer) {
            Ok(value) => Ok(ApiJson(value)),
            Err(err) => Err(json_error(err)),
        }
    }
}

fn has_json_content_type(request: &Request) -> bool {
    let Some(value) = request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()) else { return false };
    let Ok(mime) = value.parse::<mime::Mime>() else { return false };
    mime.type_() == "application" && (mime.subtype() == "json" || mime.suffix().is_some_and(|suffix| suffix == "json"))
}

fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not valid JSON: {inner}"));
    }

    // A missing field is reported at the enclosing object, with its name in backquotes in
    // the message; take the name from there. Unknown fields already end the path.
    let message = inner.to_string();
    let missing = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
    let field = match (path.as_str(), missing) {
        (".", Some(name)) => name.to_string(),
        (".", None) => String::new(),
        (path, Some(name)) => format!("{path}.{name}"),
        (path, None) => path.to_string(),
    };
    let error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", format!("invalid request body: {}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") }));
    if field.is_empty() {
        error
    } else {
        error.with_field(field)
    }
}
