//! The catalogue: items read from files, stored in SQLite or PostgreSQL, and their vectors in a
//! usearch index.

mod attributes;
mod index;
mod lexical;
mod lock;
mod live;
mod manifest;
mod postgres;
mod repository;
mod rows;
mod shared_snapshot;
mod snapshot;
mod source;
mod sqlite;
mod store;
mod writes;

use std::path::PathBuf;

pub use attributes::AttributeTable;
pub use index::{IndexHit, VectorIndex};
pub use lexical::{LexicalError, LexicalIndex};
pub use lock::{DataDirLock, LOCK_FILE};
pub use live::{Copied, LiveIndex};
pub use manifest::{HeadRecord, IndexRecord, Manifest, ModelRecord, MANIFEST_FILE, MANIFEST_FORMAT};
pub use source::{read_catalog, CatalogFormat, FieldSelection};
pub use shared_snapshot::SharedSnapshots;
pub use snapshot::{SnapshotRecord, SNAPSHOT_FILE};
pub use postgres::{PostgresRepository, CHANGES_CHANNEL};
pub use repository::{CatalogWrites, ChangeLog, FeedbackRepository, ItemReads};
pub use sqlite::SqliteRepository;
pub use store::{unix_seconds, ItemStore, StoredItem};
pub use writes::{Change, ChangeOp, ItemRecord, WriteOutcome, WriteStatus};

/// File names inside a data directory.
pub const DATABASE_FILE: &str = "catalog.db";
pub const INDEX_FILE: &str = "items.usearch";
pub const HEAD_FILE: &str = "head.safetensors";

/// A catalogue item as read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    /// Shown to shoppers in results.
    pub title: String,
    /// Embedded text: the configured text fields joined with ". ".
    pub text: String,
    /// Every other field of the row, kept for display and filtering.
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// Errors of the catalogue layer. `InvalidCatalog` and `UnknownFormat` are the caller's
/// fault (a bad input file); the others are failures of storage on this machine.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("invalid catalogue {path} at line {line}: {message}")]
    InvalidCatalog { path: PathBuf, line: u64, message: String },
    #[error("cannot tell the format of {path}: use a .csv, .jsonl or .ndjson file")]
    UnknownFormat { path: PathBuf },
    #[error("failed to read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("invalid storage settings: {0}")]
    Storage(String),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("vector index error: {0}")]
    Index(String),
    #[error("invalid manifest {path}: {message}")]
    InvalidManifest { path: PathBuf, message: String },
    #[error("data directory {dir} does not match this configuration: {message}")]
    ManifestMismatch { dir: PathBuf, message: String },
    #[error("data directory {dir} is in use by {holder}; stop it first, or send requests to the running server")]
    InUse { dir: PathBuf, holder: String },
    #[error("data directory {dir} has no index: {hint}")]
    NotIndexed { dir: PathBuf, hint: String },
}
