//! Keeping the derived index in line with the database: repair at start-up, snapshots,
//! background rebuilds after many removals, feedback retention, and the flush at shutdown.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{Recommender, ServiceError};
use crate::catalog::{Change, ChangeOp, SharedSnapshots, SnapshotRecord, INDEX_FILE};
use crate::config::Settings;
use crate::metrics::METRICS;

impl Recommender {
    /// Brings the loaded index file up to the database: replays the changes after its
    /// snapshot, then checks that the index contains exactly the stored items and repairs it when
    /// not (re-embedding what is missing, dropping what was deleted). Saves a snapshot when
    /// anything changed.
    pub(super) async fn bring_index_up_to_date(&self) -> Result<(), ServiceError> {
        let started = Instant::now();
        let mut applied = self.writer.lock().await;
        let snapshot = SnapshotRecord::read(&self.data_dir)?;
        self.snapshot_seq.store(snapshot.seq, Ordering::Release);

        let changes = self.store.changes_after(snapshot.seq).await?;
        let replayed = changes.len();
        let last_op = final_ops(&changes);
        for (&key, _) in last_op.iter().filter(|(_, op)| **op == ChangeOp::Remove) {
            self.index.remove(key)?;
        }
        let to_add: Vec<u64> = last_op.iter().filter(|(key, op)| **op == ChangeOp::Add && !self.index.contains(**key)).map(|(key, _)| *key).collect();
        for (key, vector) in self.embed_stored(&to_add).await? {
            self.index.add(key, &vector)?;
        }

        // The change log covers writes made through the API. A check of the whole key set
        // covers the rest: a lost or stale index file, or a database edited by hand.
        let keys = self.store.all_keys().await?;
        let missing = keys.iter().filter(|key| !self.index.contains(**key)).count();
        let repaired = missing > 0 || self.index.len() != keys.len();
        if repaired {
            tracing::warn!(stored = keys.len(), indexed = self.index.len(), missing, "the index disagrees with the database; rebuilding it");
            let copied = self.index.copy(&keys)?;
            for (key, vector) in self.embed_stored(&copied.missing).await? {
                copied.index.add(key, &vector)?;
            }
            self.index.replace(copied.index);
        }

        // Another replica may have drawn a sequence number that it has not committed yet, so
        // with a shared database only the changes read count as applied.
        let applied_seq = match (self.store.is_shared(), changes.last()) {
            (true, Some(last)) => last.seq,
            (true, None) => snapshot.seq,
            (false, _) => self.store.last_seq().await?,
        };
        *applied = applied_seq;
        drop(applied);
        if repaired || applied_seq > snapshot.seq {
            self.save_snapshot().await?;
        }
        tracing::info!(replayed, repaired, items = self.index.len(), seconds = started.elapsed().as_secs_f64(), "index checked against the database");
        Ok(())
    }

    /// Embeds the stored texts of `keys`; keys whose item is gone are left out.
    async fn embed_stored(&self, keys: &[u64]) -> Result<Vec<(u64, Vec<f32>)>, ServiceError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let texts = self.store.texts_by_key(keys).await?;
        let present: Vec<u64> = keys.iter().copied().filter(|key| texts.contains_key(key)).collect();
        let vectors = self.embed_texts(present.iter().map(|key| texts[key].clone()).collect()).await?;
        Ok(present.into_iter().zip(vectors).collect())
    }

    /// Saves the index and its snapshot record when changes were applied since the last
    /// snapshot, then drops the change log up to it. Writes wait while the file is written.
    pub async fn save_snapshot(&self) -> Result<bool, ServiceError> {
        let applied = self.writer.lock().await;
        let seq = *applied;
        let index_path = self.data_dir.join(INDEX_FILE);
        if seq == self.snapshot_seq.load(Ordering::Acquire) && index_path.exists() {
            // The shared directory may still lack this snapshot, for example before the
            // first write after start-up.
            self.publish_shared_snapshot(seq).await?;
            return Ok(false);
        }
        let started = Instant::now();
        let index = self.index.clone();
        let items = index.len() as u64;
        let path = index_path.clone();
        tokio::task::spawn_blocking(move || index.save(&path)).await.map_err(|err| ServiceError::Internal(format!("snapshot task failed: {err}")))??;
        SnapshotRecord { seq, items, saved_at: Self::now() as u64 }.write(&self.data_dir)?;
        self.snapshot_seq.store(seq, Ordering::Release);
        // A rebuild in progress replays the log from where it started; keep it until then.
        // TODO(replication): a shared log is never pruned, because other replicas may still
        // need it; prune up to the oldest sequence that every replica has applied.
        if !self.rebuilding.load(Ordering::Acquire) && !self.store.is_shared() {
            self.store.prune_changes(seq).await?;
        }
        self.publish_shared_snapshot(seq).await?;
        drop(applied);
        METRICS.snapshot_seconds.observe(started.elapsed().as_secs_f64());
        tracing::info!(seq, items, seconds = started.elapsed().as_secs_f64(), "index snapshot saved");
        Ok(true)
    }

    /// Copies the data directory's snapshot to `storage.snapshot_dir`, when set, unless the
    /// one there is as recent. The caller holds the writer lock, so the files do not change.
    async fn publish_shared_snapshot(&self, seq: u64) -> Result<(), ServiceError> {
        let Some(shared) = self.shared_snapshots.clone() else {
            return Ok(());
        };
        let data_dir = self.data_dir.clone();
        let published = tokio::task::spawn_blocking(move || shared.publish(&data_dir)).await.map_err(|err| ServiceError::Internal(format!("snapshot task failed: {err}")))??;
        if published {
            tracing::info!(seq, "index snapshot published to the shared snapshot directory");
        }
        Ok(())
    }

    /// Starts a background rebuild when removals have left too many dead nodes in the graph.
    pub(super) fn rebuild_when_needed(self: &Arc<Self>) {
        if self.index.removed_ratio() <= self.rebuild_removed_ratio || self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(err) = this.rebuild_index().await {
                tracing::error!(error = %err, "index rebuild failed; the current index stays in use");
            }
            this.rebuilding.store(false, Ordering::Release);
        });
    }

    /// Rebuilds the index from its live vectors while searches and writes go on: copies the
    /// vectors of the stored items, then, with writes paused, applies the changes made during
    /// the copy and swaps the new index in.
    pub async fn rebuild_index(&self) -> Result<(), ServiceError> {
        let started = Instant::now();
        let (start_seq, keys) = {
            let applied = self.writer.lock().await;
            (*applied, self.store.all_keys().await?)
        };
        let removed_ratio = self.index.removed_ratio();
        let index = self.index.clone();
        let copied = tokio::task::spawn_blocking(move || index.copy(&keys)).await.map_err(|err| ServiceError::Internal(format!("rebuild task failed: {err}")))??;

        let applied = self.writer.lock().await;
        for (key, op) in final_ops(&self.store.changes_after(start_seq).await?) {
            match op {
                ChangeOp::Add => {
                    if let Some(vector) = self.index.vector(key)? {
                        copied.index.add(key, &vector)?;
                    }
                }
                _ => {
                    copied.index.remove(key)?;
                }
            }
        }
        let items = copied.index.len();
        self.index.replace(copied.index);
        drop(applied);
        METRICS.index_rebuilds.inc();
        tracing::info!(items, removed_ratio, seconds = started.elapsed().as_secs_f64(), "index rebuilt");
        Ok(())
    }

    /// Deletes feedback older than the retention period.
    pub async fn apply_retention(&self) -> Result<u64, ServiceError> {
        let deleted = self.feedback.apply_retention(Self::now()).await?;
        if deleted > 0 {
            tracing::info!(deleted, "old feedback events deleted");
        }
        Ok(deleted)
    }

    /// Flushes everything at shutdown: a final snapshot and a checkpoint of the database's
    /// write-ahead log.
    pub async fn shutdown(&self) -> Result<(), ServiceError> {
        self.save_snapshot().await?;
        self.store.checkpoint().await?;
        tracing::info!("index and database flushed");
        Ok(())
    }
}

/// Copies the latest shared snapshot into a data directory with no index yet, when
/// `storage.snapshot_dir` is set. Returns the shared directory for later publishing.
pub(super) fn restore_shared_snapshot(settings: &Settings, data_dir: &Path) -> Result<Option<SharedSnapshots>, ServiceError> {
    if settings.storage.snapshot_dir.is_empty() {
        return Ok(None);
    }
    let shared = SharedSnapshots::new(&settings.storage.snapshot_dir);
    if let Some(record) = shared.restore_into(data_dir)? {
        tracing::info!(seq = record.seq, items = record.items, snapshot_dir = %settings.storage.snapshot_dir, "data directory restored from the shared snapshot");
    }
    Ok(Some(shared))
}

/// Returns the last index operation of each key in the change log. Updates of a title or
/// attributes leave the vector alone, so they are skipped.
pub(super) fn final_ops(changes: &[Change]) -> HashMap<u64, ChangeOp> {
    changes.iter().filter(|change| change.op != ChangeOp::Update).map(|change| (change.key, change.op)).collect()
}
