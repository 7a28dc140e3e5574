//! The feedback endpoints: what shoppers did with items, stored before the response.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use super::AppState;
use crate::feedback::EventKind;
use crate::service::{validate_feedback, FeedbackInput, Recommender, ServiceError};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user_id": "shopper-42", "query": "nike running shoes", "item_id": "sku-1001", "event": "click", "value": 1.0, "timestamp": "2026-12-05T10:00:00Z"}))]
pub struct FeedbackBody {
    /// The shopper, as the client knows them. Stored as a keyed hash when
    /// `feedback.hash_user_ids` is on (the default).
    #[serde(default)]
    #[schema(max_length = 128)]
    pub user_id: Option<String>,
    /// The query the item was recommended for; events with a query are training examples.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub query: Option<String>,
    /// An item in the catalogue.
    #[schema(example = "sku-1001", pattern = "^[A-Za-z0-9._:~@+=-]{1,128}$")]
    pub item_id: String,
    pub event: EventKind,
    /// Strength of the event (a rating's score, a purchase's quantity); 1 when left out.
    /// A finite number from -1e6 to 1e6.
    #[serde(default)]
    #[schema(example = 1.0)]
    pub value: Option<f64>,
    /// Time of the event: unix seconds or an RFC 3339 date-time, at most one day ahead and
    /// not older than `feedback.retention_days`. The time of receipt when left out.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "2026-12-05T10:00:00Z")]
    pub timestamp: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBatchBody {
    /// Up to `feedback.max_batch_events` (default 1000) events, stored together or not at all.
    pub events: Vec<FeedbackBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackResponse {
    /// Events stored.
    #[schema(example = 1)]
    pub stored: usize,
}

fn input(body: FeedbackBody) -> FeedbackInput {
    FeedbackInput { user_id: body.user_id, query: body.query, item_id: body.item_id, event: body.event, value: body.value, timestamp: body.timestamp }
}

/// Records one feedback event. It is on disk when the response arrives.
#[utoipa::path(
    post, path = "/feedback", tag = "feedback",
    request_body = FeedbackBody,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Stored", body = FeedbackResponse, example = json!({"stored": 1})),
        (status = 400, description = "The body is not valid JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "No API key is configured, so writes are disabled", body = ErrorBody),
        (status = 413, description = "The body is larger than `server.body_limit_bytes`", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 422, description = "A field is invalid or the item is not in the catalogue", body = ErrorBody,
            example = json!({"error": {"code": "invalid_request", "message": "invalid item_id: item sku-9 is not in the catalogue; add it with PUT /items/{id} first", "field": "item_id"}})),
        (status = 429, description = "Too many requests in flight", body = ErrorBody),
        (status = 500, description = "The service failed", body = ErrorBody),
        (status = 503, description = "Timed out (the event may still be stored)", body = ErrorBody),
    )
)]
pub async fn post_feedback(State(state): State<AppState>, ApiJson(body): ApiJson<FeedbackBody>) -> Result<Json<FeedbackResponse>, ApiError> {
    let _permit = state.admit()?;
    let event = validate_feedback(input(body), "", state.recommender.max_query_chars(), state.retention_days, Recommender::now())?;
    state.within_timeout(state.recommender.record_feedback(vec![event], |_| "item_id".to_string())).await?;
    Ok(Json(FeedbackResponse { stored: 1 }))
}

/// Records several feedback events at once, all or none.
#[utoipa::path(
    post, path = "/feedback/batch", tag = "feedback",
    request_body = FeedbackBatchBody,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Every event stored", body = FeedbackResponse, example = json!({"stored": 250})),
        (status = 400, description = "The body is not valid JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "No API key is configured, so writes are disabled", body = ErrorBody),
        (status = 413, description = "The body is larger than `server.batch_body_limit_bytes`", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 422, description = "An event is invalid or names an unknown item, or the batch is empty or too large; nothing was stored", body = ErrorBody),
        (status = 429, description = "Too many requests in flight", body = ErrorBody),
        (status = 500, description = "The service failed", body = ErrorBody),
        (status = 503, description = "Timed out (the events may still be stored)", body = ErrorBody),
    )
)]
pub async fn post_feedback_batch(State(state): State<AppState>, ApiJson(body): ApiJson<FeedbackBatchBody>) -> Result<Json<FeedbackResponse>, ApiError> {
    let _permit = state.admit()?;
    let limit = state.max_batch_events;
    if body.events.is_empty() || body.events.len() > limit {
        return Err(ServiceError::invalid("events", format!("has {} events; send 1 to {limit}", body.events.len())).into());
    }
    let now = Recommender::now();
    let max_query_chars = state.recommender.max_query_chars();
    let events = body
        .events
        .into_iter()
        .enumerate()
        .map(|(position, event)| validate_feedback(input(event), &format!("events[{position}]."), max_query_chars, state.retention_days, now))
        .collect::<Result<Vec<_>, _>>()?;
    let stored = events.len();
    state.within_timeout(state.recommender.record_feedback(events, |position| format!("events[{position}].item_id"))).await?;
    Ok(Json(FeedbackResponse { stored }))
}
