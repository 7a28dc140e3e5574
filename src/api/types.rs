//! Request and response bodies of the HTTP API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::explain::WordWeight;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"query": "hobbit goes on a journey to destroy a ring", "k": 5, "explain": true}))]
pub struct RecommendRequest {
    /// The shopper's free text, in any language. Must contain a non-whitespace character and
    /// be at most `server.max_query_chars` (default 2000) characters long. Optional when
    /// there is a history (`history` or `user_id`) or `positive` lists items.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    pub query: Option<String>,
    /// Number of items to return, from 1 to the server's `server.max_k` (default 100).
    /// Defaults to `server.default_k` (10). Fewer come back when the catalogue is smaller.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100, example = 5)]
    pub k: Option<usize>,
    /// Return the attention weight of each word of the query and of each history item
    /// (needs a query or a history).
    #[serde(default)]
    pub explain: bool,
    /// Only items whose attributes pass this filter.
    #[serde(default)]
    pub filter: Option<crate::filter::FilterSpec>,
    /// Items like the ones wanted, as ids or `{"id", "weight"}` (weight 1 by default, up to 100).
    /// The interest vector moves toward their mean: `query + 0.75 * mean(positive) - 0.25 *
    /// mean(negative)`. Listed items are left out of the results. At most 50.
    #[serde(default)]
    pub positive: Vec<ExampleItem>,
    /// Items unlike the ones wanted; they need a query, a history or positive items too. At
    /// most 50.
    #[serde(default)]
    pub negative: Vec<ExampleItem>,
    /// The shopper, as in `POST /feedback`. Their most recent items in the feedback log
    /// (`history.max_items`, default 20) form the history, unless `history` is given. Needed
    /// by `exclude_purchased`. With `explain`, the response lists those items, so turn on
    /// `auth.protect_reads` unless user ids are secret.
    #[serde(default)]
    #[schema(max_length = 128)]
    pub user_id: Option<String>,
    /// Ids of items the shopper acted on, oldest first; the most recent `history.max_items`
    /// distinct ones shape the interest. Overrides the history of `user_id`; an empty list
    /// turns history off. Every id must be in the catalogue. The
    /// query decides which of them matter: the interest is `normalize(u + mix * p)`, where
    /// `p` is an attention-weighted mean of the history items, attending to those similar to
    /// the query `u`. Without a query the history alone decides. At most 200.
    #[serde(default)]
    pub history: Option<Vec<String>>,
    /// Leave the history items out of the results: every listed one, or the recorded ones
    /// used for `user_id`. Useful for "more like what I looked at", since history alone
    /// otherwise ranks the items already seen first.
    #[serde(default)]
    pub exclude_history: bool,
    /// Leave out items that `user_id` bought (feedback events `purchase`).
    #[serde(default)]
    pub exclude_purchased: bool,
    /// From 0 (by relevance only, the default) to 1: re-ranks the results by maximal marginal
    /// relevance, trading relevance for variety among them.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0, example = 0.3)]
    pub diversity: Option<f32>,
    /// "vector" or "hybrid" (vectors fused with BM25 over item texts); `server.default_mode`
    /// when left out. The BM25 half reads only the query's words, so history and examples
    /// shape only the vector half; "vector" lets them weigh fully. In hybrid mode items are
    /// in fused order and `score` stays the cosine
    /// similarity, so scores need not decrease.
    #[serde(default)]
    pub mode: Option<crate::service::SearchMode>,
}

/// An example item: its id, or its id and a weight.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ExampleItem {
    Id(String),
    Weighted(WeightedItem),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedItem {
    pub id: String,
    /// Above 0, at most 100; 1 when left out.
    #[serde(default = "unit_weight")]
    pub weight: f32,
}

fn unit_weight() -> f32 {
    1.0
}

impl From<ExampleItem> for crate::service::Example {
    fn from(item: ExampleItem) -> Self {
        match item {
            ExampleItem::Id(id) => Self { id, weight: 1.0 },
            ExampleItem::Weighted(WeightedItem { id, weight }) => Self { id, weight },
        }
    }
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

impl From<crate::service::Recommendation> for RecommendResponse {
    fn from(result: crate::service::Recommendation) -> Self {
        let explain = (result.explain.is_some() || result.explain_history.is_some()).then(|| Explanation {
            tokens: result.explain.unwrap_or_default(),
            history: result.explain_history.unwrap_or_default().into_iter().map(|(id, weight)| HistoryWeight { id, weight }).collect(),
        });
        Self {
            items: result.items.into_iter().map(|item| ItemScore { id: item.id, score: item.score, title: item.title }).collect(),
            explain,
            truncated: result.truncated,
        }
    }
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
    /// The words of the query in order, with weights that sum to 1. Left out without a query.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<WordWeight>,
    /// The history items that shaped the result, most recent first, with weights that sum
    /// to 1. Left out without a history.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryWeight>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryWeight {
    #[schema(example = "sku-1001")]
    pub id: String,
    /// Share of the attention over the history items, between 0 and 1.
    #[schema(example = 0.72)]
    pub weight: f32,
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
