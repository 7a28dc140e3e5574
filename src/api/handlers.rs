//! Route handlers. They translate between HTTP and the service and hold no logic of their own.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use super::types::{HealthResponse, ReadyResponse, RecommendRequest, RecommendResponse};
use super::AppState;
use crate::service::QueryInput;
use crate::metrics::METRICS;

/// The OpenAPI document served at `/openapi.yaml`, as checked in.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// Recommend catalogue items for free text.
#[utoipa::path(
    post, path = "/recommend", tag = "recommend",
    request_body = RecommendRequest,
    responses(
        (status = 200, description = "The top-k items, best first", body = RecommendResponse,
            example = json!({"items": [{"id": "7", "score": 0.62, "title": "The Hobbit"}],
                "explain": {"tokens": [{"text": "hobbit", "weight": 0.31}]}, "truncated": false})),
        (status = 400, description = "The body is not valid JSON", body = ErrorBody,
            example = json!({"error": {"code": "invalid_json", "message": "the body is not valid JSON: EOF while parsing an object at line 1 column 14"}})),
        (status = 413, description = "The body is larger than `server.body_limit_bytes`", body = ErrorBody,
            example = json!({"error": {"code": "payload_too_large", "message": "the request body is larger than the server's limit; send a shorter body"}})),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody,
            example = json!({"error": {"code": "unsupported_media_type", "message": "send the body as JSON with the header Content-Type: application/json"}})),
        (status = 422, description = "A field is missing, of the wrong type or out of range", body = ErrorBody,
            example = json!({"error": {"code": "invalid_request", "message": "invalid k: is 0; use a value from 1 to 100", "field": "k"}})),
        (status = 429, description = "Too many requests in flight; retry after the Retry-After header", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait")),
            example = json!({"error": {"code": "overloaded", "message": "too many requests in flight; retry after the Retry-After delay"}})),
        (status = 500, description = "The service failed", body = ErrorBody,
            example = json!({"error": {"code": "internal", "message": "the request failed inside the service; see the server log"}})),
        (status = 503, description = "Still starting, or the request timed out", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait")),
            example = json!({"error": {"code": "not_ready", "message": "the service is still starting; retry after the Retry-After delay"}})),
    )
)]
pub async fn recommend(State(state): State<AppState>, ApiJson(request): ApiJson<RecommendRequest>) -> Result<Json<RecommendResponse>, ApiError> {
    let _permit = state.admit()?;
    let input = QueryInput {
        text: request.query,
        k: request.k.unwrap_or(state.default_k),
        explain: request.explain,
        filter: request.filter,
        positive: request.positive.into_iter().map(Into::into).collect(),
        negative: request.negative.into_iter().map(Into::into).collect(),
        user_id: request.user_id,
        history: request.history,
        exclude_purchased: request.exclude_purchased,
        exclude_history: request.exclude_history,
        diversity: request.diversity,
        mode: request.mode,
    };
    let query = state.recommender.validate(input)?;
    tracing::debug!(k = query.k, explain = query.explain, query_chars = query.text.as_ref().map(|text| text.chars().count()), "recommend");
    let result = state.within_timeout(state.recommender.recommend(query)).await?;
    Ok(Json(RecommendResponse::from(result)))
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process is up", body = HealthResponse, example = json!({"status": "ok"}))))]
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok".into() })
}

/// Readiness: the model and index are loaded and the encoder is warmed up.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = ReadyResponse, example = json!({"status": "ready", "items": 10000, "device": "cpu"})),
        (status = 503, description = "Still warming up", body = ReadyResponse, example = json!({"status": "starting", "items": 10000, "device": "cpu"})),
    ))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.recommender.is_ready();
    let body = ReadyResponse {
        status: if ready { "ready" } else { "starting" }.into(),
        items: state.recommender.index_size(),
        device: state.recommender.device().to_string(),
    };
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics in the Prometheus text format", content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn metrics() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], METRICS.render()).into_response()
}

/// This API's OpenAPI 3 document.
#[utoipa::path(get, path = "/openapi.yaml", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/yaml", body = String)))]
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML).into_response()
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

pub async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{} does not accept this method; see GET /openapi.yaml", uri.path()))
}

/// Turns a panic inside a handler into a JSON 500 instead of a dropped connection.
pub fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the request failed inside the service; see the server log").into_response()
}

pub(super) fn timeout_duration(milliseconds: u64) -> Duration {
    Duration::from_millis(milliseconds)
}
