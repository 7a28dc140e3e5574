//! The one place where errors become HTTP responses: `{"error": {"code", "message", "field"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::batcher::EngineError;
use crate::metrics::METRICS;
use crate::service::ServiceError;

/// Seconds a client should wait before retrying a 429 or 503.
const RETRY_AFTER_SECONDS: &str = "1";

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable error code.
    #[schema(example = "invalid_request")]
    pub code: String,
    /// Description of the failure and of the fix.
    #[schema(example = "invalid k: is 0; use a value from 1 to 100")]
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "k")]
    pub field: Option<String>,
}

/// An error response: status, code, message and the field at fault.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no route for {path}; see GET /openapi.yaml for the API"))
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "send a configured API key as Authorization: Bearer KEY")
    }

    pub fn overloaded(reason: &'static str) -> Self {
        METRICS.rejected.with_label_values(&[reason]).inc();
        Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", "too many requests in flight; retry after the Retry-After delay")
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::InvalidInput { field, message } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", format!("invalid {field}: {message}")).with_field(field)
            }
            ServiceError::NotFound { what } => Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found")),
            ServiceError::Overloaded | ServiceError::Engine(EngineError::Overloaded) => Self::overloaded("queue_full"),
            ServiceError::NotReady => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the service is still starting; retry after the Retry-After delay")
            }
            ServiceError::TimedOut(limit) => {
                METRICS.rejected.with_label_values(&["timeout"]).inc();
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", format!("the request took longer than {} ms", limit.as_millis()))
            }
            other => {
                tracing::error!(error = %other, "request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the request failed inside the service; see the server log")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message, field: self.field } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if matches!(self.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
