//! Training input of the history attention: shoppers' events resolved to catalogue rows, the
//! items' stored vectors and the events' query vectors, computed with the frozen encoder and
//! the served pooling head.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};

use super::{item_features, query_features};
use crate::catalog::{Item, ItemStore, DATABASE_FILE};
use crate::config::Settings;
use crate::encoder::TokenStates;
use crate::feedback::FeedbackLog;
use crate::history::{sequences_by_user, train_history, HistoryData, HistoryReport, HistoryTrainOptions};
use crate::pooling::{l2_normalize, AttentionHead};
use crate::service::{LoadedModel, ServiceError};

/// Query texts pooled per forward pass of the head.
const QUERY_CHUNK: usize = 256;

/// One shopper action, as read from the feedback log or an events file.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEvent {
    pub user: String,
    pub item_id: String,
    /// Unix seconds.
    pub time: f64,
    pub query: Option<String>,
}

/// Events turned into sequences over catalogue rows, with their vectors.
pub struct PreparedHistory {
    pub data: HistoryData,
    /// Events whose item is not in the catalogue; they are left out.
    pub skipped_events: usize,
}

/// Resolves events to catalogue rows and computes the item vectors the index would hold
/// (`normalize(W_score mean)`) and the pooled vectors of the events' queries.
pub fn prepare_history(model: &LoadedModel, head: &AttentionHead, items: &[Item], events: &[HistoryEvent], cache_dir: &Path) -> Result<PreparedHistory, ServiceError> {
    let encoder = &model.encoder;
    let row_of: HashMap<&str, usize> = items.iter().enumerate().map(|(row, item)| (item.id.as_str(), row)).collect();

    let mut query_texts: Vec<String> = Vec::new();
    let mut query_row: HashMap<&str, usize> = HashMap::new();
    let mut resolved = Vec::with_capacity(events.len());
    for event in events {
        let Some(&item) = row_of.get(event.item_id.as_str()) else { continue };
        let query = event.query.as_deref().filter(|text| !text.trim().is_empty()).map(|text| {
            *query_row.entry(text).or_insert_with(|| {
                query_texts.push(text.to_string());
                query_texts.len() - 1
            })
        });
        resolved.push((event.user.clone(), item, event.time, query));
    }
    let skipped_events = events.len() - resolved.len();

    let texts: Vec<String> = items.iter().map(|item| item.text.clone()).collect();
    let means = item_features(encoder, &texts, cache_dir, &model.fingerprint)?.means;
    let item_vectors = l2_normalize(&means.matmul(&head.w_score.t()?)?)?;

    let queries = if query_texts.is_empty() {
        None
    } else {
        let features = query_features(encoder, &query_texts, cache_dir, &model.fingerprint)?;
        let mut pooled = Vec::with_capacity(query_texts.len().div_ceil(QUERY_CHUNK));
        for start in (0..query_texts.len()).step_by(QUERY_CHUNK) {
            let count = QUERY_CHUNK.min(query_texts.len() - start);
            let states = TokenStates { hidden: features.states.narrow(0, start, count)?.to_dtype(DType::F32)?, mask: features.mask.narrow(0, start, count)? };
            pooled.push(head.pool_queries(&states)?.vectors);
        }
        Some(Tensor::cat(&pooled, 0)?)
    };

    let data = HistoryData { items: item_vectors, queries, sequences: sequences_by_user(resolved) };
    Ok(PreparedHistory { data, skipped_events })
}

/// `attnrec train --history`: learns history weights from the data directory's feedback log
/// (events with a user id) and writes them to `out` with a JSON report beside it.
pub async fn train_history_from_feedback(settings: &Settings, out: &Path, cache_dir: &Path, options: &HistoryTrainOptions) -> Result<HistoryReport, ServiceError> {
    super::create_parent(out)?;
    let data_dir = &settings.data_dir;
    let store = ItemStore::open(&data_dir.join(DATABASE_FILE)).await?;
    let items = store.all_items().await?;
    let events = FeedbackLog::new(store, &settings.feedback).user_events().await?;
    tracing::info!(events = events.len(), items = items.len(), "history read from the feedback log");

    let manifest = crate::catalog::Manifest::read(data_dir)?;
    let model = crate::service::load_model(settings)?;
    let head = crate::service::load_head(settings, &manifest, data_dir, &model.encoder)?;
    let prepared = prepare_history(&model, &head, &items, &events, cache_dir)?;
    let (weights, report) = train_history(&prepared.data, options)?;

    weights.save(out)?;
    super::write_report(out, &report)?;
    Ok(report)
}
