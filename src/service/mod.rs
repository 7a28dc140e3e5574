//! The recommendation service: loads a data directory with its model and head, returns the
//! top-k items for free-text queries, and applies catalogue writes and feedback. Shared by
//! the HTTP server and the CLI.

mod upkeep;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Semaphore};

pub use writes::{validate_feedback, validate_id, validate_item, FeedbackInput, ItemInput};

use crate::batcher::{BatchLimits, Engine, EngineError, EngineSettings, TextKind};
use crate::catalog::{CatalogError, ItemStore, LiveIndex, Manifest, VectorIndex, DATABASE_FILE, HEAD_FILE, INDEX_FILE};
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

/// A validated recommendation request.
#[derive(Debug, Clone)]
pub struct Query {
    pub text: String,
    pub k: usize,
    pub explain: bool,
}

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
}

impl Recommender {
    /// Opens a data directory built by `attnrec index`. Fails with a clear message when it
    /// was built with another model or head than the configured ones.
    pub async fn open(settings: &Settings) -> Result<Self, ServiceError> {
        let data_dir = &settings.data_dir;
        let manifest = Manifest::read(data_dir)?;
        let model = load_model(settings)?;
        let head = load_head(settings, &manifest, data_dir, &model.encoder)?;
        manifest.check_compatible(data_dir, &model.fingerprint, &head.checksum()?)?;
        manifest.check_prefixes(data_dir, model.encoder.tokenizer().prefixes())?;

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
        let store = ItemStore::open(&data_dir.join(DATABASE_FILE)).await?;
        let feedback = FeedbackLog::new(store.clone(), &settings.feedback);

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
        };
        recommender.bring_index_up_to_date().await?;
        METRICS.index_items.set(recommender.index.len() as i64);
        tracing::info!(data_dir = %data_dir.display(), items = recommender.index.len(), head = %&manifest_head(&recommender.manifest), "catalogue loaded");
        Ok(recommender)
    }

    /// Checks a request's fields against the configured limits.
    pub fn validate(&self, text: String, k: usize, explain: bool) -> Result<Query, ServiceError> {
        if text.trim().is_empty() {
            return Err(ServiceError::invalid("query", "must contain at least one non-whitespace character"));
        }
        let chars = text.chars().count();
        if chars > self.max_query_chars {
            return Err(ServiceError::invalid("query", format!("is {chars} characters long; the maximum is {}", self.max_query_chars)));
        }
        if k == 0 || k > self.max_k {
            return Err(ServiceError::invalid("k", format!("is {k}; use a value from 1 to {}", self.max_k)));
        }
        Ok(Query { text, k, explain })
    }

    /// Returns the top-k items for a validated query, best first.
    pub async fn recommend(&self, query: Query) -> Result<Recommendation, ServiceError> {
        if !self.engine.is_ready() {
            return Err(ServiceError::NotReady);
        }
        let embedding = self.engine.embed(query.text, TextKind::Query).await?;

        let permit = self.search_permits.clone().acquire_owned().await.map_err(|_| ServiceError::Internal("search pool closed".into()))?;
        let index = self.index.clone();
        let vector = embedding.vector.clone();
        // A deleted item can linger in a search for the moment between its database delete
        // and its index removal; it is dropped below, and a few spare hits keep k full.
        let k = query.k + 4;
        let hits = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let started = Instant::now();
            let hits = index.search(&vector, k);
            METRICS.search_seconds.observe(started.elapsed().as_secs_f64());
            hits
        })
        .await
        .map_err(|err| ServiceError::Internal(format!("search task failed: {err}")))??;

        let keys: Vec<u64> = hits.iter().map(|hit| hit.key).collect();
        let found = self.store.get_by_keys(&keys).await?;
        let items = hits
            .iter()
            .filter_map(|hit| {
                found.get(&hit.key).map(|item| RecommendedItem { id: item.id.clone(), score: hit.score, title: item.title.clone() })
            })
            .take(query.k)
            .collect();

        let explain = query.explain.then(|| word_weights(&embedding.tokens, &embedding.attention));
        Ok(Recommendation { items, explain, truncated: embedding.tokens.truncated })
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
