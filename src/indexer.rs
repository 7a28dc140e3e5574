//! `attnrec index`: reads a catalogue file, stores it in the database, embeds every item and writes
//! the vector index and manifest of a data directory.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

use crate::catalog::{
    read_catalog, CatalogError, FieldSelection, HeadRecord, IndexRecord, Item, ItemStore, Manifest, ModelRecord, SnapshotRecord, VectorIndex,
    DATABASE_FILE, HEAD_FILE, INDEX_FILE, MANIFEST_FILE, MANIFEST_FORMAT, SNAPSHOT_FILE,
};
use crate::config::{ScalarChoice, Settings, StorageBackend};
use crate::encoder::{Encoder, TextKind, TokenizedText};
use crate::pooling::AttentionHead;
use crate::service::{load_model, ServiceError};

/// Summary of an indexing run.
#[derive(Debug, Clone)]
pub struct IndexReport {
    pub items: usize,
    pub truncated: usize,
    pub elapsed_seconds: f64,
    pub data_dir: PathBuf,
}

/// Builds a data directory from a catalogue file. The new files are written into a staging
/// directory and moved into place at the end, so a failed run leaves the old data untouched.
pub async fn build_data_dir(settings: &Settings, catalog: &Path, head_path: Option<&Path>) -> Result<IndexReport, ServiceError> {
    let started = Instant::now();
    let fields = FieldSelection { id_field: settings.catalog.id_field.clone(), text_fields: settings.catalog.text_fields.clone() };
    let items = read_catalog(catalog, &fields)?;
    tracing::info!(catalog = %catalog.display(), items = items.len(), "catalogue read");

    let model = load_model(settings)?;
    let head = match head_path {
        Some(path) => AttentionHead::load(path, model.encoder.hidden_size(), model.encoder.device())?,
        None => AttentionHead::untrained(model.encoder.hidden_size(), model.encoder.device())?,
    };

    let data_dir = &settings.data_dir;
    let _lock = crate::catalog::DataDirLock::acquire(data_dir).await?;
    let staging = data_dir.join(".staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|source| CatalogError::Io { path: staging.clone(), source })?;
    }
    std::fs::create_dir_all(&staging).map_err(|source| CatalogError::Io { path: staging.clone(), source })?;

    let keys = store_items(settings, &staging, &items).await?;

    let texts: Vec<&str> = items.iter().map(|item| item.text.as_str()).collect();
    let tokenized = model.encoder.tokenizer().tokenize_all(&texts, TextKind::Item)?;
    let truncated = tokenized.iter().filter(|text| text.truncated).count();
    let index = VectorIndex::create(model.encoder.hidden_size(), &settings.index, items.len(), 1)?;
    embed_into_index(&model.encoder, &head, &tokenized, &keys, settings.catalog.batch_size, &index)?;
    index.save(&staging.join(INDEX_FILE))?;
    if head_path.is_some() {
        head.save(&staging.join(HEAD_FILE))?;
    }

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        model: ModelRecord {
            name: model.files.name.clone(),
            fingerprint: model.fingerprint.clone(),
            max_tokens: settings.model.max_tokens,
            query_prefix: model.encoder.tokenizer().prefixes().query.clone(),
            passage_prefix: model.encoder.tokenizer().prefixes().passage.clone(),
        },
        head: HeadRecord { checksum: head.checksum()?, stored: head_path.is_some() },
        index: IndexRecord {
            dimensions: model.encoder.hidden_size(),
            metric: "ip".into(),
            scalar: match settings.index.scalar {
                ScalarChoice::F32 => "f32".into(),
                ScalarChoice::F16 => "f16".into(),
            },
            connectivity: settings.index.connectivity,
        },
        item_count: items.len() as u64,
        id_field: fields.id_field,
        text_fields: fields.text_fields,
        created_at: SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0),
    };
    SnapshotRecord { seq: 0, items: items.len() as u64, saved_at: manifest.created_at }.write(&staging)?;
    manifest.write(&staging)?;
    replace_data_files(&staging, data_dir)?;

    let report = IndexReport { items: items.len(), truncated, elapsed_seconds: started.elapsed().as_secs_f64(), data_dir: data_dir.clone() };
    tracing::info!(items = report.items, truncated, seconds = report.elapsed_seconds, "index built");
    Ok(report)
}

/// Stores the items in the staging directory's new SQLite file or, with PostgreSQL, in the
/// shared database, which must hold no items yet. Returns their keys in input order.
// NOTE: with PostgreSQL the items are committed before they are embedded, so a run that
// fails afterwards leaves them in the database, and the next run is rejected until the
// tables are emptied.
async fn store_items(settings: &Settings, staging: &Path, items: &[Item]) -> Result<Vec<u64>, ServiceError> {
    if settings.storage.backend()? == StorageBackend::Sqlite {
        let store = ItemStore::open(&staging.join(DATABASE_FILE)).await?;
        let keys = store.insert_all(items).await?;
        // The feedback log is the shoppers' history and the training data, so a rebuilt
        // catalogue keeps it.
        let previous = settings.data_dir.join(DATABASE_FILE);
        if previous.is_file() {
            let copied = store.sqlite().expect("opened as SQLite").copy_feedback_from(&previous).await?;
            tracing::info!(events = copied, "feedback log carried over from the previous catalogue");
        }
        store.close().await?;
        return Ok(keys);
    }
    let store = ItemStore::connect(&settings.storage, staging).await?;
    let stored = store.count().await?;
    if stored > 0 {
        return Err(CatalogError::Storage(format!(
            "the PostgreSQL catalogue is not empty ({stored} items); `attnrec index` loads a catalogue into an empty database only, \
             so change it through the API, or start another replica from a copy of an indexed data directory"
        ))
        .into());
    }
    let keys = store.insert_all(items).await?;
    store.close().await?;
    Ok(keys)
}

/// Embeds texts in batches of similar length, so little of each forward pass is padding.
fn embed_into_index(
    encoder: &Encoder,
    head: &AttentionHead,
    tokenized: &[TokenizedText],
    keys: &[u64],
    batch_size: usize,
    index: &VectorIndex,
) -> Result<(), ServiceError> {
    let mut order: Vec<usize> = (0..tokenized.len()).collect();
    order.sort_by_key(|&position| tokenized[position].len());

    let progress = ProgressBar::new(tokenized.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} embedding {pos}/{len} items [{bar:40}] {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    for chunk in order.chunks(batch_size.max(1)) {
        let batch: Vec<&TokenizedText> = chunk.iter().map(|&position| &tokenized[position]).collect();
        let states = encoder.forward(&batch)?;
        let vectors = head.pool_items(&states)?.to_vec2::<f32>().map_err(crate::pooling::PoolingError::from)?;
        for (&position, vector) in chunk.iter().zip(&vectors) {
            index.add(keys[position], vector)?;
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    Ok(())
}

/// Moves the staged files over the data directory's, manifest last, then removes staging.
fn replace_data_files(staging: &Path, data_dir: &Path) -> Result<(), CatalogError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CatalogError::Io { path, source }
    };
    // Remove the old manifest first: a crash midway then leaves a directory that is refused
    // as "not indexed" rather than one whose files disagree.
    let old_manifest = data_dir.join(MANIFEST_FILE);
    if old_manifest.exists() {
        std::fs::remove_file(&old_manifest).map_err(io(&old_manifest))?;
    }
    let wal = format!("{DATABASE_FILE}-wal");
    let shm = format!("{DATABASE_FILE}-shm");
    for stale in [wal.as_str(), shm.as_str(), HEAD_FILE, SNAPSHOT_FILE] {
        let path = data_dir.join(stale);
        if path.exists() {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    // The write-ahead log was checkpointed on close; should it still exist, it contains
    // committed rows and moves with the database.
    for name in [DATABASE_FILE, wal.as_str(), INDEX_FILE, SNAPSHOT_FILE, HEAD_FILE, MANIFEST_FILE] {
        let from = staging.join(name);
        if from.exists() {
            std::fs::rename(&from, data_dir.join(name)).map_err(io(&from))?;
        }
    }
    std::fs::remove_dir_all(staging).map_err(io(staging))
}
