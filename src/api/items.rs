//! The catalogue endpoints: upsert, batch upsert, delete and read items by id.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use super::AppState;
use crate::catalog::{WriteOutcome, WriteStatus};
use crate::service::{validate_item, ItemInput, ServiceError};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Nike Air Zoom Pegasus running shoes", "text": "Nike Air Zoom Pegasus running shoes. Lightweight road running shoe.", "attributes": {"brand": "Nike", "price": 119.99}}))]
pub struct ItemBody {
    /// Shown in recommendations. Required, at most `catalog.max_text_chars` characters.
    #[schema(min_length = 1, max_length = 10000)]
    pub title: String,
    /// The text that is embedded and searched; the title when left out.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 10000)]
    pub text: Option<String>,
    /// Up to 64 names with strings, numbers, booleans, null or lists of those. Stored and
    /// returned as given.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    /// 1 to 128 characters: letters, digits and `. _ - : ~ @ + =`.
    #[schema(example = "sku-1001", pattern = "^[A-Za-z0-9._:~@+=-]{1,128}$")]
    pub id: String,
    #[schema(min_length = 1, max_length = 10000)]
    pub title: String,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 10000)]
    pub text: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"items": [{"id": "sku-1001", "title": "Nike running shoes"}, {"id": "sku-1002", "title": "Red electric kettle", "attributes": {"price": 24.5}}]}))]
pub struct ItemBatchBody {
    /// Up to `catalog.max_batch_items` (default 100) items with distinct ids, written together
    /// or not at all.
    pub items: Vec<BatchItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemWriteResponse {
    pub id: String,
    pub status: WriteStatus,
    /// Sequence number of this write; a later write of any item has a larger one.
    #[schema(example = 1042)]
    pub seq: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemBatchResponse {
    /// One entry per item, in request order.
    pub items: Vec<ItemWriteResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemResponse {
    pub id: String,
    pub title: String,
    pub text: String,
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// Sequence number of the item's latest write (0 for items from `attnrec index`).
    pub seq: u64,
    /// Unix seconds of the latest write.
    pub updated_at: i64,
}

fn write_response(outcome: WriteOutcome) -> ItemWriteResponse {
    ItemWriteResponse { id: outcome.id, status: outcome.status, seq: outcome.seq }
}

/// Adds or replaces one item. It is searchable when the response arrives.
#[utoipa::path(
    put, path = "/items/{id}", tag = "catalogue",
    params(("id" = String, Path, description = "Item id: 1 to 128 letters, digits or `. _ - : ~ @ + =`", example = "sku-1001")),
    request_body = ItemBody,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Stored, embedded and searchable", body = ItemWriteResponse,
            example = json!({"id": "sku-1001", "status": "created", "seq": 1042})),
        (status = 400, description = "The body is not valid JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody,
            example = json!({"error": {"code": "unauthorized", "message": "send a configured API key as Authorization: Bearer KEY"}})),
        (status = 403, description = "No API key is configured, so writes are disabled", body = ErrorBody),
        (status = 413, description = "The body is larger than `server.body_limit_bytes`", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 422, description = "A field is missing, unknown, of the wrong type or out of range", body = ErrorBody,
            example = json!({"error": {"code": "invalid_request", "message": "invalid id: contains '/'; ids may use letters, digits and . _ - : ~ @ + = only", "field": "id"}})),
        (status = 429, description = "Too many requests in flight", body = ErrorBody),
        (status = 500, description = "The service failed", body = ErrorBody),
        (status = 503, description = "Still starting, or timed out (the write may still be applied; repeating it is safe)", body = ErrorBody),
    )
)]
pub async fn put_item(State(state): State<AppState>, Path(id): Path<String>, ApiJson(body): ApiJson<ItemBody>) -> Result<Json<ItemWriteResponse>, ApiError> {
    let _permit = state.admit()?;
    let input = ItemInput { title: body.title, text: body.text, attributes: body.attributes };
    let item = validate_item(&id, input, "", state.recommender.max_text_chars())?;
    let outcomes = state.within_timeout(state.recommender.upsert_items(vec![item])).await?;
    Ok(Json(write_response(outcomes.into_iter().next().ok_or_else(|| ServiceError::Internal("an upsert returned no outcome".into()))?)))
}

/// Adds or replaces several items at once, all or none.
#[utoipa::path(
    post, path = "/items/batch", tag = "catalogue",
    request_body = ItemBatchBody,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Every item stored, embedded and searchable", body = ItemBatchResponse,
            example = json!({"items": [{"id": "sku-1001", "status": "created", "seq": 1043}, {"id": "sku-1002", "status": "updated", "seq": 1045}]})),
        (status = 400, description = "The body is not valid JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "No API key is configured, so writes are disabled", body = ErrorBody),
        (status = 413, description = "The body is larger than `server.batch_body_limit_bytes`", body = ErrorBody),
        (status = 415, description = "The body is not sent as application/json", body = ErrorBody),
        (status = 422, description = "An item is invalid, an id repeats, or the batch is empty or too large; nothing was written", body = ErrorBody,
            example = json!({"error": {"code": "invalid_request", "message": "invalid items[2].id: repeats items[0].id; send each id once per batch", "field": "items[2].id"}})),
        (status = 429, description = "Too many requests in flight", body = ErrorBody),
        (status = 500, description = "The service failed", body = ErrorBody),
        (status = 503, description = "Still starting, or timed out (the batch may still be applied; repeating it is safe)", body = ErrorBody),
    )
)]
pub async fn post_items(State(state): State<AppState>, ApiJson(body): ApiJson<ItemBatchBody>) -> Result<Json<ItemBatchResponse>, ApiError> {
    let _permit = state.admit()?;
    let limit = state.max_batch_items;
    if body.items.is_empty() || body.items.len() > limit {
        return Err(ServiceError::invalid("items", format!("has {} items; send 1 to {limit}", body.items.len())).into());
    }
    let mut first_position = std::collections::HashMap::new();
    let mut items = Vec::with_capacity(body.items.len());
    for (position, entry) in body.items.into_iter().enumerate() {
        let prefix = format!("items[{position}].");
        if let Some(first) = first_position.insert(entry.id.clone(), position) {
            return Err(ServiceError::invalid(format!("{prefix}id"), format!("repeats items[{first}].id; send each id once per batch")).into());
        }
        let input = ItemInput { title: entry.title, text: entry.text, attributes: entry.attributes };
        items.push(validate_item(&entry.id, input, &prefix, state.recommender.max_text_chars())?);
    }
    let outcomes = state.within_timeout(state.recommender.upsert_items(items)).await?;
    Ok(Json(ItemBatchResponse { items: outcomes.into_iter().map(write_response).collect() }))
}

/// Deletes an item. It is gone from recommendations when the response arrives.
#[utoipa::path(
    delete, path = "/items/{id}", tag = "catalogue",
    params(("id" = String, Path, description = "Item id", example = "sku-1001")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Deleted", body = ItemWriteResponse, example = json!({"id": "sku-1001", "status": "deleted", "seq": 1050})),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "No API key is configured, so writes are disabled", body = ErrorBody),
        (status = 404, description = "No item has this id", body = ErrorBody,
            example = json!({"error": {"code": "not_found", "message": "item sku-1001 not found"}})),
        (status = 422, description = "The id is malformed", body = ErrorBody),
        (status = 429, description = "Too many requests in flight", body = ErrorBody),
        (status = 500, description = "The service failed", body = ErrorBody),
        (status = 503, description = "Still starting, or timed out", body = ErrorBody),
    )
)]
pub async fn delete_item(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ItemWriteResponse>, ApiError> {
    let _permit = state.admit()?;
    crate::service::validate_id(&id, "id")?;
    let outcome = state.within_timeout(state.recommender.delete_item(id)).await?;
    Ok(Json(write_response(outcome)))
}

/// Reads an item as stored.
#[utoipa::path(
    get, path = "/items/{id}", tag = "catalogue",
    params(("id" = String, Path, description = "Item id", example = "sku-1001")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "The stored item", body = ItemResponse,
            example = json!({"id": "sku-1001", "title": "Nike running shoes", "text": "Nike running shoes", "attributes": {"brand": "Nike"}, "seq": 1042, "updated_at": 1796400000})),
        (status = 401, description = "Missing or wrong API key (when `auth.protect_reads` is on)", body = ErrorBody),
        (status = 404, description = "No item has this id", body = ErrorBody),
        (status = 422, description = "The id is malformed", body = ErrorBody),
        (status = 500, description = "The service failed", body = ErrorBody),
    )
)]
pub async fn get_item(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ItemResponse>, ApiError> {
    crate::service::validate_id(&id, "id")?;
    let item = state.recommender.get_item(&id).await?;
    Ok(Json(ItemResponse { id: item.id, title: item.title, text: item.text, attributes: item.attributes, seq: item.seq, updated_at: item.updated_at }))
}
