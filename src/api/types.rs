//! Request and response bodies of the HTTP API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::explain::WordWeight;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"query": "hobbit goes on a journey to destroy a ring", "k": 5, "explain": true}))]
pub struct RecommendRequest {
    /// The shopper's free text, in any language. Must contain a non-whitespace character and
    /// be at most `server.max_query_chars` (default 2000) characters long.
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    pub query: String,
    /// Number of items to return, from 1 to the server's `server.max_k` (default 100).
    /// Defaults to `server.default_k` (10). Fewer come back when the catalogue is smaller.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100, example = 5)]
    pub k: Option<usize>,
    /// Return the attention weight of each word of the query.
    #[serde(default)]
    pub explain: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecommendResponse {
    /// Best first.
    pub items: Vec<ItemScore>,
    /// Present when the request set `explain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explanation>,
    /// True when the query was longer than the model's token limit and its end was ignored.
    pub truncated: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemScore {
    #[schema(example = "7")]
    pub id: String,
    /// Cosine similarity between the query and the item, from -1 to 1.
    #[schema(example = 0.62)]
    pub score: f32,
    #[schema(example = "The Hobbit")]
    pub title: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Explanation {
    /// The words of the query in order, with weights that sum to 1.
    pub tokens: Vec<WordWeight>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    #[schema(example = "ok")]
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// "ready", or "starting" while the encoder warms up.
    #[schema(example = "ready")]
    pub status: String,
    /// Items in the search index.
    #[schema(example = 10000)]
    pub items: usize,
    /// Device of the encoder: "cpu" or "cuda:0".
    #[schema(example = "cpu")]
    pub device: String,
}
