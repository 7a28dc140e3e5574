//! The recommendation service: loads a data directory with its model and head, returns the
//! top-k items for free-text queries, and applies catalogue writes and feedback. Shared by
//! the HTTP server and the CLI.

mod follow;
mod retrieve;
mod upkeep;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Semaphore};

pub use retrieve::{fuse, interest_vector, maximal_marginal_relevance, Example, SearchMode, NEGATIVE_WEIGHT, POSITIVE_WEIGHT};
pub use writes::{validate_feedback, validate_id, validate_item, FeedbackInput, ItemInput};

/// History weights file in a data directory, used when `history.path` is empty.
pub const HISTORY_FILE: &str = "history.safetensors";

use crate::batcher::{BatchLimits, Engine, EngineError, EngineSettings, TextKind};
use crate::catalog::{CatalogError, ItemStore, LiveIndex, Manifest, VectorIndex, HEAD_FILE, INDEX_FILE};
use crate::config::Settings;
use crate::feedback::{FeedbackError, FeedbackLog};
use crate::encoder::{select_device, Encoder, EncoderError, ModelFiles, ModelSource, TextPrefixes};
use crate::explain::{word_weights, WordWeight};
use crate::metrics::METRICS;
use crate::pooling::{AttentionHead, PoolingError};

/// Errors of the service layer. `InvalidInput` is the caller's fault; `Overloaded` and
/// `NotReady` are temporary; the rest are failures of this service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid {field}: {message}")]
    InvalidInput { field: String, message: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("the service is overloaded")]
    Overloaded,
    #[error("the service is still starting")]
    NotReady,
    #[error("the request timed out after {0:?}")]
    TimedOut(Duration),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Feedback(#[from] FeedbackError),
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error(transparent)]
    Pooling(#[from] PoolingError),
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError::InvalidInput { field: field.into(), message: message.into() }
    }
}

/// A recommendation request as a client sends it, before validation.
#[derive(Debug, Clone, Default)]
pub struct QueryInput {
    pub text: Option<String>,
    pub k: usize,
    pub explain: bool,
    pub filter: Option<crate::filter::FilterSpec>,
    pub positive: Vec<Example>,
    pub negative: Vec<Example>,
    /// The shopper: their recent items form the history unless `history` is given.
    pub user_id: Option<String>,
    /// Item ids the shopper acted on, oldest first.
    pub history: Option<Vec<String>>,
    pub exclude_purchased: bool,
    pub exclude_history: bool,
    pub diversity: Option<f32>,
    pub mode: Option<SearchMode>,
}

/// A request's history as index keys.
#[derive(Debug, Default)]
struct ResolvedHistory {
    /// The items that shape the interest: the most recent distinct ones, most recent first.
    used: Vec<(String, u64)>,
    /// Every history item, for `exclude_history`.
    all_keys: Vec<u64>,
}

/// Source of a request's history.
#[derive(Debug, Clone, PartialEq)]
pub enum HistorySource {
    None,
    /// Item ids given in the request, oldest first, as listed.
    Items(Vec<String>),
    /// The user's recent items in the feedback log.
    User(String),
}

impl QueryInput {
    /// Returns a plain text query with default options.
    pub fn text(text: impl Into<String>, k: usize) -> Self {
        Self { text: Some(text.into()), k, ..Self::default() }
    }
}

/// A validated recommendation request.
#[derive(Debug, Clone)]
pub struct Query {
    pub text: Option<String>,
    pub k: usize,
    pub explain: bool,
    pub filter: Option<crate::filter::Filter>,
    pub positive: Vec<Example>,
    pub negative: Vec<Example>,
    pub history: HistorySource,
    pub exclude_purchased_by: Option<String>,
    pub exclude_history: bool,
    pub diversity: f32,
    pub mode: SearchMode,
}

/// Most positive and negative examples in one request.
pub const MAX_EXAMPLES: usize = 50;
/// Most history items one request may list; the most recent `history.max_items` are used.
pub const MAX_HISTORY: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub struct RecommendedItem {
    pub id: String,
    pub score: f32,
    pub title: String,
}

#[derive(Debug, Clone)]
pub struct Recommendation {
    pub items: Vec<RecommendedItem>,
    /// Attention per word of the query, when requested.
    pub explain: Option<Vec<WordWeight>>,
    /// Attention per history item (id, weight), most recent first, when requested.
    pub explain_history: Option<Vec<(String, f32)>>,
    /// True when the query was longer than the model's maximum and was cut.
    pub truncated: bool,
}

/// The model, head and device a data directory is served or built with.
pub struct LoadedModel {
    pub files: ModelFiles,
    pub fingerprint: String,
    pub encoder: Encoder,
}

/// Resolves and loads the configured model.
pub fn load_model(settings: &Settings) -> Result<LoadedModel, ServiceError> {
    let files = ModelSource::parse(&settings.model.source, &settings.model.revision).resolve()?;
    let fingerprint = files.fingerprint()?;
    let device = select_device(settings.model.device)?;
    let (profile, prefixes) = match settings.model_profile()? {
        Some((name, profile)) => (name, TextPrefixes { query: profile.query_prefix, passage: profile.passage_prefix }),
        None => ("none".to_string(), TextPrefixes::default()),
    };
    let encoder = Encoder::load(&files, settings.model.max_tokens, device)?.with_prefixes(prefixes);
    tracing::info!(profile = %profile, "model profile applied");
    Ok(LoadedModel { files, fingerprint, encoder })
}

/// Chooses the head: `head.path` when configured, else the data directory's own trained head,
/// else the untrained head.
pub fn load_head(settings: &Settings, manifest: &Manifest, data_dir: &Path, encoder: &Encoder) -> Result<AttentionHead, ServiceError> {
    let configured = (!settings.head.path.is_empty()).then(|| PathBuf::from(&settings.head.path));
    let stored = manifest.head.stored.then(|| data_dir.join(HEAD_FILE));
    match configured.or(stored) {
        Some(path) => Ok(AttentionHead::load(&path, encoder.hidden_size(), encoder.device())?),
        None => Ok(AttentionHead::untrained(encoder.hidden_size(), encoder.device())?),
    }
}

/// Chooses the history weights: `history.path` when configured, else the data directory's
/// history.safetensors when present, else the untrained weights. They run on the CPU beside
/// the index vectors.
pub fn load_history(settings: &Settings, data_dir: &Path, dim: usize) -> Result<crate::history::HistoryWeights, ServiceError> {
    let max_items = settings.history.max_items;
    let configured = (!settings.history.path.is_empty()).then(|| PathBuf::from(&settings.history.path));
    let stored = Some(data_dir.join(HISTORY_FILE)).filter(|path| path.is_file());
    let device = candle_core::Device::Cpu;
    let Some(path) = configured.or(stored) else {
        return Ok(crate::history::HistoryWeights::untrained(dim, max_items, &device)?);
    };
    let weights = crate::history::HistoryWeights::load(&path, dim, &device)?;
    if weights.max_items() < max_items {
        return Err(ServiceError::invalid(
            "history.max_items",
            format!("is {max_items}, but {} was trained for at most {} items; lower it or train with --history-items {max_items}", path.display(), weights.max_items()),
        ));
    }
    tracing::info!(path = %path.display(), "history weights loaded");
    Ok(weights)
}

pub struct Recommender {
    engine: Engine,
    index: Arc<LiveIndex>,
    store: ItemStore,
    feedback: FeedbackLog,
    search_permits: Arc<Semaphore>,
    manifest: Manifest,
    data_dir: PathBuf,
    max_k: usize,
    max_query_chars: usize,
    max_text_chars: usize,
    /// Held while a catalogue write commits and reaches the index, so the index applies
    /// changes in the order the database committed them. Holds the last applied change.
    writer: Mutex<u64>,
    /// The last change contained in the saved index file.
    snapshot_seq: AtomicU64,
    rebuilding: AtomicBool,
    rebuild_removed_ratio: f64,
    /// Item attributes by key, for filters.
    attributes: Arc<crate::catalog::AttributeTable>,
    /// BM25 over item texts by key, for hybrid mode.
    lexical: Arc<crate::catalog::LexicalIndex>,
    /// Attention over a shopper's recent items.
    history: crate::history::HistoryWeights,
    /// History items used per request, the most recent ones.
    history_items: usize,
    default_mode: SearchMode,
    shared_snapshots: Option<crate::catalog::SharedSnapshots>,
    /// Keeps other processes out of the data directory while this one serves it.
    _lock: crate::catalog::DataDirLock,
}

impl Recommender {
    /// Opens a data directory built by `attnrec index`. Fails with a clear message when it
    /// was built with another model or head than the configured ones.
    pub async fn open(settings: &Settings) -> Result<Self, ServiceError> {
        let data_dir = &settings.data_dir;
        let lock = crate::catalog::DataDirLock::acquire(data_dir).await?;
        let shared_snapshots = upkeep::restore_shared_snapshot(settings, data_dir)?;
        let manifest = Manifest::read(data_dir)?;
        let model = load_model(settings)?;
        let head = load_head(settings, &manifest, data_dir, &model.encoder)?;
        manifest.check_compatible(data_dir, &model.fingerprint, &head.checksum()?)?;
        manifest.check_prefixes(data_dir, model.encoder.tokenizer().prefixes())?;
        let history = load_history(settings, data_dir, model.encoder.hidden_size())?;

        let threads = settings.search_threads();
        // Room for the searches, the writer and a background rebuild at once.
        let index_users = threads + 2;
        let dimensions = model.encoder.hidden_size();
        let index_path = data_dir.join(INDEX_FILE);
        let index = if index_path.exists() {
            VectorIndex::load(&index_path, dimensions, &settings.index, index_users)?
        } else {
            tracing::warn!(path = %index_path.display(), "the index file is missing; it will be rebuilt from the database");
            VectorIndex::create(dimensions, &settings.index, 1024, index_users)?
        };
        let index = Arc::new(LiveIndex::new(index, &settings.index, index_users));
        let store = ItemStore::connect(&settings.storage, data_dir).await?;
        let feedback = FeedbackLog::new(store.clone(), &settings.feedback);
        let attributes = Arc::new(crate::catalog::AttributeTable::new(store.all_attributes().await?));
        let lexical = Arc::new(crate::catalog::LexicalIndex::build(&store.all_texts().await?).map_err(|err| ServiceError::Internal(err.to_string()))?);

        let batching = &settings.batching;
        let engine = Engine::start(
            model.encoder,
            head,
            EngineSettings {
                limits: BatchLimits { max_batch_tokens: batching.max_batch_tokens, max_batch_requests: batching.max_batch_requests },
                max_wait: Duration::from_micros(batching.max_wait_us),
                tokenizer_threads: batching.tokenizer_threads,
                queue_capacity: batching.max_concurrent_requests,
            },
        );
        let recommender = Self {
            engine,
            index,
            store,
            feedback,
            search_permits: Arc::new(Semaphore::new(threads)),
            manifest,
            data_dir: data_dir.clone(),
            max_k: settings.server.max_k,
            max_query_chars: settings.server.max_query_chars,
            max_text_chars: settings.catalog.max_text_chars,
            writer: Mutex::new(0),
            snapshot_seq: AtomicU64::new(0),
            rebuilding: AtomicBool::new(false),
            rebuild_removed_ratio: settings.index.rebuild_removed_ratio,
            attributes,
            lexical,
            history,
            history_items: settings.history.max_items,
            default_mode: settings.server.default_mode,
            shared_snapshots,
            _lock: lock,
        };
        recommender.bring_index_up_to_date().await?;
        METRICS.index_items.set(recommender.index.len() as i64);
        tracing::info!(data_dir = %data_dir.display(), items = recommender.index.len(), head = %&manifest_head(&recommender.manifest), "catalogue loaded");
        Ok(recommender)
    }

    /// Checks a request's fields against the configured limits.
    pub fn validate(&self, input: QueryInput) -> Result<Query, ServiceError> {
        if let Some(text) = &input.text {
            if text.trim().is_empty() {
                return Err(ServiceError::invalid("query", "must contain at least one non-whitespace character"));
            }
            let chars = text.chars().count();
            if chars > self.max_query_chars {
                return Err(ServiceError::invalid("query", format!("is {chars} characters long; the maximum is {}", self.max_query_chars)));
            }
        }
        if let Some(user_id) = &input.user_id {
            writes::validate_text(user_id, "user_id", writes::MAX_ID_CHARS, true)?;
        }
        if input.exclude_purchased && input.user_id.is_none() {
            return Err(ServiceError::invalid("exclude_purchased", "needs `user_id`, the shopper whose purchases to leave out"));
        }
        let history = self.history_source(&input)?;
        if input.text.is_none() && input.positive.is_empty() && history == HistorySource::None {
            if input.history.as_ref().is_some_and(Vec::is_empty) {
                return Err(ServiceError::invalid("history", "is empty, which turns history off, and there is no query or positive item; send a query or leave `history` out to use the history of `user_id`"));
            }
            let field = if input.negative.is_empty() { "query" } else { "negative" };
            return Err(ServiceError::invalid(field, "needs a query, a history (`history` or `user_id`) or at least one positive item; negative items alone give no direction"));
        }
        if input.k == 0 || input.k > self.max_k {
            return Err(ServiceError::invalid("k", format!("is {}; use a value from 1 to {}", input.k, self.max_k)));
        }
        for (name, examples) in [("positive", &input.positive), ("negative", &input.negative)] {
            if examples.len() > MAX_EXAMPLES {
                return Err(ServiceError::invalid(name, format!("lists {} items; the maximum is {MAX_EXAMPLES}", examples.len())));
            }
            for (position, example) in examples.iter().enumerate() {
                validate_id(&example.id, &format!("{name}[{position}].id"))?;
                if !(example.weight.is_finite() && example.weight > 0.0 && example.weight <= 100.0) {
                    return Err(ServiceError::invalid(format!("{name}[{position}].weight"), "must be a number above 0 and at most 100"));
                }
            }
        }
        let diversity = input.diversity.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&diversity) {
            return Err(ServiceError::invalid("diversity", format!("is {diversity}; use a value from 0 (relevance only) to 1")));
        }
        if input.explain && input.text.is_none() && history == HistorySource::None {
            return Err(ServiceError::invalid("explain", "explains the words of a query and the history items; send a query or a history too"));
        }
        let filter = input.filter.as_ref().map(|spec| spec.compile("filter")).transpose()?;
        Ok(Query {
            text: input.text,
            k: input.k,
            explain: input.explain,
            filter,
            positive: input.positive,
            negative: input.negative,
            history,
            exclude_purchased_by: input.user_id.filter(|_| input.exclude_purchased),
            exclude_history: input.exclude_history,
            diversity,
            mode: input.mode.unwrap_or(self.default_mode),
        })
    }

    /// Checks the request's history: an explicit list wins over the user's recorded history,
    /// and an empty list turns history off.
    fn history_source(&self, input: &QueryInput) -> Result<HistorySource, ServiceError> {
        let Some(items) = &input.history else {
            return Ok(input.user_id.clone().map_or(HistorySource::None, HistorySource::User));
        };
        if items.len() > MAX_HISTORY {
            return Err(ServiceError::invalid("history", format!("lists {} items; the maximum is {MAX_HISTORY} (only the most recent {} are used)", items.len(), self.history_items)));
        }
        for (position, id) in items.iter().enumerate() {
            validate_id(id, &format!("history[{position}]"))?;
        }
        if items.is_empty() {
            return Ok(HistorySource::None);
        }
        Ok(HistorySource::Items(items.clone()))
    }

    /// Resolves the request's history to index keys. Listed ids must all exist; items of a
    /// user's recorded history that were deleted since are skipped.
    async fn resolve_history(&self, source: &HistorySource) -> Result<ResolvedHistory, ServiceError> {
        let listed = match source {
            HistorySource::None => return Ok(ResolvedHistory::default()),
            HistorySource::Items(ids) => ids.clone(),
            HistorySource::User(user_id) => {
                let mut ids = self.feedback.recent_items(user_id, self.history_items).await?;
                ids.reverse();
                ids
            }
        };
        let keys = self.store.keys_of(&listed.iter().map(String::as_str).collect::<Vec<_>>()).await?;
        if let (HistorySource::Items(_), Some(position)) = (source, listed.iter().position(|id| !keys.contains_key(id))) {
            let message = format!("item {} is not in the catalogue (deleted, or never added); leave it out of the history", listed[position]);
            return Err(ServiceError::invalid(format!("history[{position}]"), message));
        }

        // The most recent distinct items shape the interest; every listed one can be left out.
        let mut used: Vec<(String, u64)> = Vec::with_capacity(self.history_items);
        for id in listed.iter().rev() {
            if used.len() == self.history_items {
                break;
            }
            if let Some(key) = keys.get(id).filter(|key| !used.iter().any(|(_, used_key)| used_key == *key)) {
                used.push((id.clone(), *key));
            }
        }
        Ok(ResolvedHistory { used, all_keys: keys.into_values().collect() })
    }

    /// Returns the top-k items for a validated query, best first.
    pub async fn recommend(self: &Arc<Self>, query: Query) -> Result<Recommendation, ServiceError> {
        if !self.engine.is_ready() {
            return Err(ServiceError::NotReady);
        }
        let embedding = match &query.text {
            Some(text) => Some(self.engine.embed(text.clone(), TextKind::Query).await?),
            None => None,
        };

        // Examples and bought items are looked up by id and left out of the results.
        let example_ids: Vec<&str> = query.positive.iter().chain(&query.negative).map(|example| example.id.as_str()).collect();
        let keys = self.store.keys_of(&example_ids).await?;
        for (name, examples) in [("positive", &query.positive), ("negative", &query.negative)] {
            if let Some(position) = examples.iter().position(|example| !keys.contains_key(&example.id)) {
                return Err(ServiceError::invalid(format!("{name}[{position}].id"), format!("item {} is not in the catalogue", examples[position].id)));
            }
        }
        let ResolvedHistory { used: history, all_keys: history_keys } = self.resolve_history(&query.history).await?;
        if history.is_empty() && query.text.is_none() && query.positive.is_empty() {
            return Err(ServiceError::invalid("user_id", "has no recorded events to recommend from; send a query, a history or positive items"));
        }
        let mut exclude: std::collections::HashSet<u64> = keys.values().copied().collect();
        if query.exclude_history {
            exclude.extend(history_keys);
        }
        if let Some(user_id) = &query.exclude_purchased_by {
            let bought = self.feedback.purchased_items(user_id).await?;
            let bought: Vec<&str> = bought.iter().map(String::as_str).collect();
            exclude.extend(self.store.keys_of(&bought).await?.into_values());
        }

        let permit = self.search_permits.clone().acquire_owned().await.map_err(|_| ServiceError::Internal("search pool closed".into()))?;
        let this = self.clone();
        let query_vector = embedding.as_ref().map(|embedding| embedding.vector.clone());
        let (hits, history_attention) = {
            let query = query.clone();
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let started = Instant::now();
                let vectors = |examples: &[Example]| -> Result<Vec<(Vec<f32>, f32)>, ServiceError> {
                    let mut found = Vec::with_capacity(examples.len());
                    for example in examples {
                        if let Some(vector) = this.index.vector(keys[&example.id])? {
                            found.push((vector, example.weight));
                        }
                    }
                    Ok(found)
                };
                let (base, history_attention) = this.with_history(query_vector, &history)?;
                let interest = interest_vector(base.as_deref(), &vectors(&query.positive)?, &vectors(&query.negative)?, this.index.dimensions())
                    .ok_or_else(|| ServiceError::invalid("positive", "the positive items cancel out the rest; send a query or other items"))?;
                let lexical_query = (query.mode == SearchMode::Hybrid).then_some(query.text.as_deref()).flatten();
                let constraints = retrieve::Constraints { filter: query.filter.as_ref(), exclude: &exclude };
                let hits = this.rank(&interest, query.k, lexical_query, query.diversity, &constraints)?;
                METRICS.search_seconds.observe(started.elapsed().as_secs_f64());
                Ok::<_, ServiceError>((hits, history_attention))
            })
            .await
            .map_err(|err| ServiceError::Internal(format!("search task failed: {err}")))??
        };

        // A deleted item can linger in a search between its database delete and its index
        // removal. It is dropped here, and spare hits keep k full.
        let keys: Vec<u64> = hits.iter().map(|hit| hit.key).collect();
        let found = self.store.get_by_keys(&keys).await?;
        let items = hits
            .iter()
            .filter_map(|hit| {
                found.get(&hit.key).map(|item| RecommendedItem { id: item.id.clone(), score: hit.score, title: item.title.clone() })
            })
            .take(query.k)
            .collect();

        let explain = match (&embedding, query.explain) {
            (Some(embedding), true) => Some(word_weights(&embedding.tokens, &embedding.attention)),
            _ => None,
        };
        let explain_history = query.explain.then_some(history_attention).filter(|weights| !weights.is_empty());
        Ok(Recommendation { items, explain, explain_history, truncated: embedding.as_ref().is_some_and(|embedding| embedding.tokens.truncated) })
    }

    /// Folds the history items into the query vector with the history attention.
    // NOTE: without a query, popularity ranked better than history alone on MovieLens
    // (BENCHMARKS.md), and no popularity prior is mixed in yet. Returns the
    /// vector (the query's own when there is no history) and each history item's weight.
    fn with_history(&self, query: Option<Vec<f32>>, history: &[(String, u64)]) -> Result<(Option<Vec<f32>>, Vec<(String, f32)>), ServiceError> {
        let mut ids = Vec::with_capacity(history.len());
        let mut vectors = Vec::with_capacity(history.len());
        for (id, key) in history {
            if let Some(vector) = self.index.vector(*key)? {
                ids.push(id.clone());
                vectors.push(vector);
            }
        }
        if vectors.is_empty() {
            return Ok((query, Vec::new()));
        }
        let (interest, attention) = self.history.attend_one(query.as_deref(), &vectors)?;
        Ok((Some(interest), ids.into_iter().zip(attention).collect()))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn is_ready(&self) -> bool {
        self.engine.is_ready()
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn index_size(&self) -> usize {
        self.index.len()
    }

    pub fn device(&self) -> &str {
        self.engine.device()
    }
}

fn manifest_head(manifest: &Manifest) -> String {
    manifest.head.checksum.chars().take(12).collect()
}
