//! Settings: built-in defaults, a TOML file, `ATTNREC_<SECTION>__<KEY>` environment variables
//! and command-line flags, merged in that order (later wins).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod storage;

pub use storage::{StorageBackend, StorageSettings};

/// The file read when `--config` is not given and the file exists in the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/default.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("invalid configuration: {field} {problem}")]
    OutOfRange { field: &'static str, problem: String },
    #[error("configuration file {path} not found")]
    FileNotFound { path: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub model: ModelSettings,
    /// Input requirements of each known model, by name. `model.profile` or the model
    /// directory's name picks one.
    pub profiles: BTreeMap<String, ModelProfile>,
    pub head: HeadSettings,
    pub catalog: CatalogSettings,
    pub index: IndexSettings,
    pub batching: BatchingSettings,
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub feedback: FeedbackSettings,
    pub history: HistorySettings,
    pub log: LogSettings,
    pub storage: StorageSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// Local directory or Hugging Face Hub model id.
    pub source: String,
    pub revision: String,
    /// Tokens per text, special tokens included; at most the profile's `max_tokens`.
    pub max_tokens: usize,
    pub device: DeviceChoice,
    /// Name of the entry of `profiles` to use; empty picks the one named like the last part
    /// of `source`.
    pub profile: String,
}

/// Input requirements of one model: its pooling, length limit and text prefixes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelProfile {
    /// Pooling the model was trained with. Only "mean" is served, because the untrained
    /// attention head is exactly mean pooling.
    pub pooling: PoolingChoice,
    /// Maximum input length the model supports, in tokens, special tokens included.
    pub max_tokens: usize,
    /// Text put before every query, such as "query: " for e5 models.
    #[serde(default)]
    pub query_prefix: String,
    /// Text put before every item text, such as "passage: " for e5 models.
    #[serde(default)]
    pub passage_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolingChoice {
    Mean,
    Cls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadSettings {
    /// Head file; empty means the data directory's own head or the untrained head.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogSettings {
    pub id_field: String,
    pub text_fields: Vec<String>,
    /// Items per forward pass while indexing.
    pub batch_size: usize,
    /// Items accepted by one `POST /items/batch`.
    pub max_batch_items: usize,
    /// Longest accepted item title or text from the API, in characters.
    pub max_text_chars: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScalarChoice {
    F32,
    F16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexSettings {
    pub connectivity: usize,
    pub expansion_add: usize,
    pub expansion_search: usize,
    pub scalar: ScalarChoice,
    /// Concurrent searches; 0 means one per CPU core.
    pub search_threads: usize,
    /// Seconds between index snapshots while writes arrive; 0 saves only at shutdown.
    pub snapshot_interval_s: u64,
    /// Share of removed vectors in the index above which it is rebuilt in the background.
    pub rebuild_removed_ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchingSettings {
    /// Padded tokens per forward pass.
    pub max_batch_tokens: usize,
    pub max_batch_requests: usize,
    /// Microseconds the first text of a batch waits for company.
    pub max_wait_us: u64,
    pub tokenizer_threads: usize,
    pub max_concurrent_requests: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    pub max_k: usize,
    pub default_k: usize,
    /// Unicode scalar values.
    pub max_query_chars: usize,
    pub body_limit_bytes: usize,
    /// Search mode of `/recommend` when a request sets none.
    pub default_mode: crate::service::SearchMode,
    /// Largest accepted body of `POST /items/batch` and `POST /feedback/batch`.
    pub batch_body_limit_bytes: usize,
    pub request_timeout_ms: u64,
}

/// API keys. `Debug` prints how many keys there are, never the keys.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Accepted `Authorization: Bearer` keys. The environment variable takes a
    /// comma-separated list.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub api_keys: Vec<String>,
    /// Require a key on the read endpoints too (`/recommend`, `GET /items/{id}`).
    pub protect_reads: bool,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuthSettings")
            .field("api_keys", &format_args!("[{} redacted]", self.api_keys.len()))
            .field("protect_reads", &self.protect_reads)
            .finish()
    }
}

/// The feedback log. `Debug` never prints the salt.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedbackSettings {
    /// Store a keyed hash (HMAC-SHA256 with `user_id_salt`) of user ids instead of the ids.
    pub hash_user_ids: bool,
    /// Secret key of the user id hash. Set it through ATTNREC_FEEDBACK__USER_ID_SALT.
    pub user_id_salt: String,
    /// Events older than this many days are deleted; 0 keeps them forever.
    pub retention_days: u32,
    /// Events accepted by one `POST /feedback/batch`.
    pub max_batch_events: usize,
}

impl std::fmt::Debug for FeedbackSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FeedbackSettings")
            .field("hash_user_ids", &self.hash_user_ids)
            .field("user_id_salt", &if self.user_id_salt.is_empty() { "" } else { "[redacted]" })
            .field("retention_days", &self.retention_days)
            .field("max_batch_events", &self.max_batch_events)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistorySettings {
    /// History weights file; empty means the data directory's history.safetensors when it
    /// exists, else the untrained weights.
    pub path: String,
    /// Most recent history items that shape one recommendation.
    pub max_items: usize,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self { path: String::new(), max_items: 20 }
    }
}

/// Accepts a list of strings, or one string of comma-separated values (the form an
/// environment variable can carry). Empty entries are dropped.
fn list_or_comma_separated<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        Text(String),
    }
    let values = match ListOrString::deserialize(deserializer)? {
        ListOrString::List(values) => values,
        ListOrString::Text(text) => text.split(',').map(str::to_string).collect(),
    };
    Ok(values.into_iter().map(|value| value.trim().to_string()).filter(|value| !value.is_empty()).collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// EnvFilter directive used when RUST_LOG is unset.
    pub level: String,
    /// OTLP/HTTP traces endpoint, such as http://localhost:4318/v1/traces; empty turns
    /// trace export off.
    pub otlp_endpoint: String,
    /// Share of traces exported, from 0 to 1, unless the caller's `traceparent` decides.
    pub otlp_sample_ratio: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("var/data"),
            model: ModelSettings::default(),
            profiles: default_profiles(),
            head: HeadSettings::default(),
            catalog: CatalogSettings::default(),
            index: IndexSettings::default(),
            batching: BatchingSettings::default(),
            server: ServerSettings::default(),
            auth: AuthSettings::default(),
            feedback: FeedbackSettings::default(),
            history: HistorySettings::default(),
            log: LogSettings::default(),
            storage: StorageSettings::default(),
        }
    }
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            source: "models/all-MiniLM-L6-v2".into(),
            revision: "main".into(),
            max_tokens: 128,
            device: DeviceChoice::Auto,
            profile: String::new(),
        }
    }
}

/// Returns the profiles of the models that scripts/fetch-models.sh installs.
fn default_profiles() -> BTreeMap<String, ModelProfile> {
    let profile = |max_tokens, query_prefix: &str, passage_prefix: &str| ModelProfile {
        pooling: PoolingChoice::Mean,
        max_tokens,
        query_prefix: query_prefix.into(),
        passage_prefix: passage_prefix.into(),
    };
    BTreeMap::from([
        ("all-MiniLM-L6-v2".to_string(), profile(256, "", "")),
        ("multilingual-e5-small".to_string(), profile(512, "query: ", "passage: ")),
    ])
}

impl Default for CatalogSettings {
    fn default() -> Self {
        Self { id_field: "id".into(), text_fields: vec!["title".into()], batch_size: 64, max_batch_items: 100, max_text_chars: 10_000 }
    }
}

impl Default for IndexSettings {
    fn default() -> Self {
        Self {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            scalar: ScalarChoice::F32,
            search_threads: 0,
            snapshot_interval_s: 300,
            rebuild_removed_ratio: 0.2,
        }
    }
}

impl Default for BatchingSettings {
    fn default() -> Self {
        Self {
            max_batch_tokens: 4096,
            max_batch_requests: 64,
            max_wait_us: 2000,
            tokenizer_threads: 2,
            max_concurrent_requests: 256,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_k: 100,
            default_k: 10,
            max_query_chars: 2000,
            body_limit_bytes: 64 * 1024,
            default_mode: crate::service::SearchMode::Hybrid,
            batch_body_limit_bytes: 4 * 1024 * 1024,
            request_timeout_ms: 10_000,
        }
    }
}

impl Default for FeedbackSettings {
    fn default() -> Self {
        Self { hash_user_ids: true, user_id_salt: String::new(), retention_days: 365, max_batch_events: 1000 }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into(), otlp_endpoint: String::new(), otlp_sample_ratio: 1.0 }
    }
}

impl Settings {
    /// Merges defaults, the config file, the environment and `overrides` (command-line flags,
    /// as a partial settings tree), then validates the result.
    ///
    /// `file` is read when given (it must exist); otherwise `config/default.toml` is read when
    /// present in the working directory.
    pub fn load(file: Option<&Path>, overrides: serde_json::Value) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError::FileNotFound { path: path.to_path_buf() })
            }
            Some(path) => figment = figment.merge(Toml::file(path)),
            None => figment = figment.merge(Toml::file(DEFAULT_CONFIG_PATH)),
        }
        let settings: Settings = figment
            // Only ATTNREC_<SECTION>__<KEY> and ATTNREC_DATA_DIR are settings, so other
            // ATTNREC_ variables (used by tests and benchmarks) are not rejected as unknown keys.
            .merge(Env::prefixed("ATTNREC_").filter(|key| key.as_str().contains("__") || key == "data_dir").split("__"))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the limits that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("model.max_tokens", self.model.max_tokens),
            ("catalog.batch_size", self.catalog.batch_size),
            ("index.connectivity", self.index.connectivity),
            ("index.expansion_add", self.index.expansion_add),
            ("index.expansion_search", self.index.expansion_search),
            ("batching.max_batch_tokens", self.batching.max_batch_tokens),
            ("batching.max_batch_requests", self.batching.max_batch_requests),
            ("batching.tokenizer_threads", self.batching.tokenizer_threads),
            ("batching.max_concurrent_requests", self.batching.max_concurrent_requests),
            ("server.max_k", self.server.max_k),
            ("server.max_query_chars", self.server.max_query_chars),
            ("server.body_limit_bytes", self.server.body_limit_bytes),
            ("server.batch_body_limit_bytes", self.server.batch_body_limit_bytes),
            ("catalog.max_batch_items", self.catalog.max_batch_items),
            ("catalog.max_text_chars", self.catalog.max_text_chars),
            ("feedback.max_batch_events", self.feedback.max_batch_events),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError::OutOfRange { field, problem: "must be at least 1".into() });
            }
        }
        self.storage.backend()?;
        if self.model.max_tokens < 3 {
            return Err(ConfigError::OutOfRange {
                field: "model.max_tokens",
                problem: format!("is {}, must be at least 3 ([CLS], one token, [SEP])", self.model.max_tokens),
            });
        }
        if self.server.default_k == 0 || self.server.default_k > self.server.max_k {
            return Err(ConfigError::OutOfRange {
                field: "server.default_k",
                problem: format!("is {}, must be between 1 and server.max_k ({})", self.server.default_k, self.server.max_k),
            });
        }
        if !(self.index.rebuild_removed_ratio > 0.0 && self.index.rebuild_removed_ratio < 1.0) {
            return Err(ConfigError::OutOfRange {
                field: "index.rebuild_removed_ratio",
                problem: format!("is {}, must be between 0 and 1 (exclusive)", self.index.rebuild_removed_ratio),
            });
        }
        if let Some((name, profile)) = self.model_profile()? {
            if profile.pooling != PoolingChoice::Mean {
                return Err(ConfigError::OutOfRange {
                    field: "profiles.pooling",
                    problem: format!("of {name} is {:?}; only \"mean\" pooling is served", profile.pooling),
                });
            }
            if self.model.max_tokens > profile.max_tokens {
                return Err(ConfigError::OutOfRange {
                    field: "model.max_tokens",
                    problem: format!("is {} but {name} supports at most {}; lower model.max_tokens", self.model.max_tokens, profile.max_tokens),
                });
            }
        }
        if !(0.0..=1.0).contains(&self.log.otlp_sample_ratio) {
            return Err(ConfigError::OutOfRange {
                field: "log.otlp_sample_ratio",
                problem: format!("is {}, must be between 0 and 1", self.log.otlp_sample_ratio),
            });
        }
        if self.auth.protect_reads && self.auth.api_keys.is_empty() {
            return Err(ConfigError::OutOfRange {
                field: "auth.protect_reads",
                problem: "is on but auth.api_keys is empty, so no request could be served; add a key".into(),
            });
        }
        if self.catalog.text_fields.is_empty() {
            return Err(ConfigError::OutOfRange { field: "catalog.text_fields", problem: "must name at least one field".into() });
        }
        Ok(())
    }

    /// Returns the name and profile of the configured model: `model.profile` when set, else
    /// the profile named like the last part of `model.source`, else none (no prefixes, mean
    /// pooling, the model's own length limit).
    pub fn model_profile(&self) -> Result<Option<(String, ModelProfile)>, ConfigError> {
        let name = if self.model.profile.is_empty() {
            let source = self.model.source.trim_end_matches('/');
            source.rsplit('/').next().unwrap_or(source).to_string()
        } else {
            self.model.profile.clone()
        };
        match self.profiles.get(&name) {
            Some(profile) => Ok(Some((name, profile.clone()))),
            None if self.model.profile.is_empty() => Ok(None),
            None => Err(ConfigError::OutOfRange {
                field: "model.profile",
                problem: format!("is {name:?}, which is not in [profiles]; known: {}", self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")),
            }),
        }
    }

    /// Resolves `index.search_threads = 0` to the number of CPU cores.
    pub fn search_threads(&self) -> usize {
        match self.index.search_threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_matches_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
        let from_file: Settings = Figment::new().merge(Toml::file(&path)).extract().unwrap();
        assert_eq!(from_file, Settings::default());
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("custom.toml", "[server]\nmax_k = 50\ndefault_k = 5\n")?;
            jail.set_env("ATTNREC_SERVER__MAX_K", "70");
            jail.set_env("ATTNREC_MODEL__MAX_TOKENS", "64");
            jail.set_env("ATTNREC_TEST_MODEL_DIR", "/elsewhere");
            let flags = serde_json::json!({ "model": { "max_tokens": 32 } });
            let settings = Settings::load(Some(Path::new("custom.toml")), flags).unwrap();
            assert_eq!(settings.server.max_k, 70);
            assert_eq!(settings.server.default_k, 5);
            assert_eq!(settings.model.max_tokens, 32);
            Ok(())
        });
    }

    #[test]
    fn api_keys_from_env_redacted() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ATTNREC_AUTH__API_KEYS", "first-key, second-key,");
            let settings = Settings::load(Some(Path::new("/dev/null")), serde_json::json!({})).unwrap();
            assert_eq!(settings.auth.api_keys, vec!["first-key".to_string(), "second-key".to_string()]);
            let printed = format!("{settings:?}");
            assert!(!printed.contains("first-key"), "{printed}");
            Ok(())
        });
    }

    #[test]
    fn profile_follows_model_directory() {
        let mut settings = Settings::default();
        assert_eq!(settings.model_profile().unwrap().unwrap().0, "all-MiniLM-L6-v2");
        settings.model.source = "models/multilingual-e5-small/".into();
        let (name, profile) = settings.model_profile().unwrap().unwrap();
        assert_eq!((name.as_str(), profile.query_prefix.as_str()), ("multilingual-e5-small", "query: "));
        settings.model.source = "/tmp/some-model".into();
        assert!(settings.model_profile().unwrap().is_none());
        settings.model.profile = "unknown".into();
        assert!(settings.model_profile().unwrap_err().to_string().contains("multilingual-e5-small"));
    }

    #[test]
    fn max_tokens_above_profile_rejected() {
        let mut settings = Settings::default();
        settings.model.max_tokens = 300;
        assert!(settings.validate().unwrap_err().to_string().contains("at most 256"));
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err = Settings::load(Some(Path::new("/nonexistent/attnrec.toml")), serde_json::json!({})).unwrap_err();
        assert!(matches!(err, ConfigError::FileNotFound { .. }), "{err}");
    }

    #[test]
    fn default_k_above_max_k_is_rejected() {
        let mut settings = Settings::default();
        settings.server.default_k = 500;
        let err = settings.validate().unwrap_err();
        assert!(err.to_string().contains("server.default_k"), "{err}");
    }
}
