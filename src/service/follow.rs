//! Following the shared change log when the catalogue is in PostgreSQL: every replica applies
//! the catalogue writes of all replicas to its own vector index, attribute table and BM25
//! index, in sequence order. A notification at each commit wakes the follower; polling every
//! `storage.poll_interval_ms` is the fallback when one is lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::upkeep::final_ops;
use super::{Recommender, ServiceError};
use crate::catalog::{ChangeOp, PostgresRepository};
use crate::metrics::METRICS;

impl Recommender {
    /// Starts following the change log in the background; `None` with SQLite, where this
    /// process is the only writer.
    pub fn follow_changes(self: &Arc<Self>, poll_interval: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let postgres = self.store.postgres()?.clone();
        let this = self.clone();
        Some(tokio::spawn(async move { this.follow_loop(postgres, poll_interval).await }))
    }

    // NOTE: /ready stays 200 when PostgreSQL becomes unreachable after start-up; only
    // attnrec_replication_errors_total and the lag metrics show it.
    async fn follow_loop(&self, postgres: PostgresRepository, poll_interval: Duration) {
        let mut listener = None;
        loop {
            if listener.is_none() {
                match postgres.listen_for_changes().await {
                    Ok(connected) => listener = Some(connected),
                    Err(err) => tracing::warn!(error = %err, poll_ms = poll_interval.as_millis() as u64, "listening for change notifications failed; polling the change log"),
                }
            }

            if let Err(err) = self.apply_pending_changes().await {
                METRICS.replication_errors.inc();
                tracing::error!(error = %err, "applying the change log failed; retrying at the next notification or poll");
            }

            let Some(active) = listener.as_mut() else {
                tokio::time::sleep(poll_interval).await;
                continue;
            };
            match tokio::time::timeout(poll_interval, active.recv()).await {
                // One pass applies every change, so notifications already queued add nothing.
                Ok(Ok(_)) => while active.next_buffered().is_some() {},
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "the change notification connection failed; reconnecting");
                    listener = None;
                }
                Err(_elapsed) => {}
            }
        }
    }

    /// Applies every logged change after the last applied one to the index and the side
    /// tables, then updates the replication lag metrics. Returns how many changes it applied.
    /// Only the follower advances the applied sequence with a shared database, so the texts
    /// can be embedded before the writer lock is taken and local writes wait only for the
    /// index updates.
    pub async fn apply_pending_changes(&self) -> Result<usize, ServiceError> {
        let from = *self.writer.lock().await;
        let changes = self.store.changes_after(from).await?;

        // Removals win: a key is added once and removed once, never re-added, so applying the
        // last operation of each key gives the same index as replaying them all.
        let last_op = final_ops(&changes);
        let removed: Vec<u64> = last_op.iter().filter(|(_, op)| **op == ChangeOp::Remove).map(|(key, _)| *key).collect();

        // Keys this replica wrote itself are in the index already. An item deleted since has
        // no text left, and a later change removes its key.
        let missing: Vec<u64> = last_op.iter().filter(|(key, op)| **op == ChangeOp::Add && !self.index.contains(**key)).map(|(key, _)| *key).collect();
        let texts = self.store.texts_by_key(&missing).await?;
        let added: Vec<(u64, &str)> = texts.iter().map(|(key, text)| (*key, text.as_str())).collect();
        let vectors = self.stored_or_embedded_vectors(&added).await?;

        let mut applied = self.writer.lock().await;
        if let Some(last) = changes.last() {
            for key in &removed {
                self.index.remove(*key)?;
                self.attributes.remove(*key);
            }
            // A local write may have indexed a key while its text was being embedded here.
            let mut fresh = Vec::with_capacity(added.len());
            for (&(key, text), vector) in added.iter().zip(&vectors) {
                if !self.index.contains(key) {
                    self.index.add(key, vector)?;
                    fresh.push((key, text));
                }
            }
            // NOTE: each pass commits the BM25 index under the writer lock. At 100 writes a
            // second this is the suspected cause of the replication delay p99 above 1 s, not
            // yet profiled (BENCHMARKS.md).
            self.lexical.apply(&fresh, &removed).map_err(|err| ServiceError::Internal(err.to_string()))?;

            // Updates change titles and attributes, which only the attribute table keeps.
            // They are read under the lock, so no local write can commit in between.
            let touched: HashSet<u64> = changes.iter().filter(|change| change.op != ChangeOp::Remove).map(|change| change.key).collect();
            let touched: Vec<u64> = touched.into_iter().collect();
            for (key, attributes) in self.store.attributes_by_key(&touched).await? {
                self.attributes.set(key, attributes);
            }

            let now = Self::now_precise();
            for change in &changes {
                METRICS.replication_delay_seconds.observe((now - change.changed_at).max(0.0));
            }
            *applied = last.seq;
            METRICS.replication_applied_seq.set(last.seq as i64);
            METRICS.index_items.set(self.index.len() as i64);
        }
        let applied_seq = *applied;
        drop(applied);

        let (pending, oldest) = self.store.pending_changes(applied_seq).await?;
        METRICS.replication_lag_changes.set(pending as i64);
        METRICS.replication_lag_seconds.set(oldest.map_or(0.0, |changed_at| (Self::now_precise() - changed_at).max(0.0)));
        Ok(changes.len())
    }

    /// Returns the vectors of `items` (key and text) in order: the embeddings that the writing
    /// replica stored, and for the rest (items loaded by `attnrec index`) new embeddings.
    async fn stored_or_embedded_vectors(&self, items: &[(u64, &str)]) -> Result<Vec<Vec<f32>>, ServiceError> {
        let keys: Vec<u64> = items.iter().map(|(key, _)| *key).collect();
        let mut stored = self.store.vectors_by_key(&keys).await?;
        let dimensions = self.index.dimensions();
        stored.retain(|_, vector| vector.len() == dimensions);

        let unstored: Vec<String> = items.iter().filter(|(key, _)| !stored.contains_key(key)).map(|(_, text)| text.to_string()).collect();
        let mut embedded = self.embed_texts(unstored).await?.into_iter();
        let mut vectors = Vec::with_capacity(items.len());
        for (key, _) in items {
            match stored.remove(key) {
                Some(vector) => vectors.push(vector),
                None => vectors.push(embedded.next().expect("one embedding per unstored item")),
            }
        }
        Ok(vectors)
    }

    /// Returns unix seconds with a fraction.
    // NOTE: the lag compares this machine's clock with the database server's, so clock skew
    // between them shows up as lag.
    fn now_precise() -> f64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_secs_f64()).unwrap_or(0.0)
    }
}
