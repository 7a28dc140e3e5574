//! The index that the server searches while catalogue writes change it.
//!
//! usearch lets searches, adds and removes run at once, but growing its capacity or replacing
//! the whole index must not overlap any of them. A read-write lock expresses exactly that:
//! searches and single-vector writes share it, growth and replacement take it alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use super::{CatalogError, IndexHit, VectorIndex};
use crate::config::IndexSettings;

/// Keys copied per read-lock hold during a rebuild, so a writer that needs the lock alone
/// waits for one chunk at most.
const COPY_CHUNK: usize = 1024;

pub struct LiveIndex {
    index: RwLock<VectorIndex>,
    /// Vectors removed since the index was built. Their graph nodes stay until a rebuild or
    /// until an add reuses the slot, so this counts dead nodes high, never low.
    removed: AtomicUsize,
    settings: IndexSettings,
    /// Concurrent users the index reserves room for.
    threads: usize,
}

/// The outcome of copying vectors into a new index.
pub struct Copied {
    pub index: VectorIndex,
    /// Keys asked for that the current index does not hold.
    pub missing: Vec<u64>,
}

impl LiveIndex {
    pub fn new(index: VectorIndex, settings: &IndexSettings, threads: usize) -> Self {
        let removed = index.removed_nodes();
        Self { index: RwLock::new(index), removed: AtomicUsize::new(removed), settings: settings.clone(), threads }
    }

    fn read(&self) -> RwLockReadGuard<'_, VectorIndex> {
        // A panic while holding the lock cannot leave usearch half-changed in a way Rust
        // could see, so a poisoned lock is used as is.
        self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<IndexHit>, CatalogError> {
        self.read().search(query, k)
    }

    pub fn filtered_search(&self, query: &[f32], k: usize, keep: impl Fn(u64) -> bool) -> Result<Vec<IndexHit>, CatalogError> {
        self.read().filtered_search(query, k, keep)
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dimensions(&self) -> usize {
        self.read().dimensions()
    }

    pub fn contains(&self, key: u64) -> bool {
        self.read().contains(key)
    }

    /// Adds a vector, growing the index first when it is full. A key already present is left
    /// as it is: keys are never reused, so its vector is the same.
    pub fn add(&self, key: u64, vector: &[f32]) -> Result<(), CatalogError> {
        {
            let index = self.read();
            if index.contains(key) {
                return Ok(());
            }
            if index.len() < index.capacity() {
                return index.add(key, vector);
            }
        }
        let index = self.index.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if index.len() >= index.capacity() {
            index.reserve((index.capacity() * 2).max(64))?;
        }
        index.add(key, vector)
    }

    /// Removes a vector; returns whether it was there.
    pub fn remove(&self, key: u64) -> Result<bool, CatalogError> {
        let removed = self.read().remove(key)?;
        if removed {
            self.removed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(removed)
    }

    /// Returns removals since the last build relative to the graph size: an upper bound on
    /// the share of dead nodes.
    pub fn removed_ratio(&self) -> f64 {
        let removed = self.removed.load(Ordering::Relaxed);
        let total = removed + self.len();
        if total == 0 {
            0.0
        } else {
            removed as f64 / total as f64
        }
    }

    /// Builds a new index holding the current vectors of `keys`, without blocking searches.
    pub fn copy(&self, keys: &[u64]) -> Result<Copied, CatalogError> {
        let dimensions = self.dimensions();
        let index = VectorIndex::create(dimensions, &self.settings, keys.len() + keys.len() / 4 + 64, self.threads)?;
        let mut missing = Vec::new();
        for chunk in keys.chunks(COPY_CHUNK) {
            let current = self.read();
            for &key in chunk {
                match current.vector(key)? {
                    Some(vector) => index.add(key, &vector)?,
                    None => missing.push(key),
                }
            }
        }
        Ok(Copied { index, missing })
    }

    /// Returns a copy of the current vector of a key.
    pub fn vector(&self, key: u64) -> Result<Option<Vec<f32>>, CatalogError> {
        self.read().vector(key)
    }

    /// Swaps in a rebuilt index.
    pub fn replace(&self, index: VectorIndex) {
        *self.index.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = index;
        self.removed.store(0, Ordering::Relaxed);
    }

    /// Saves the index atomically (see `VectorIndex::save`).
    pub fn save(&self, path: &std::path::Path) -> Result<(), CatalogError> {
        self.read().save(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random_unit(rng: &mut StdRng, dimensions: usize) -> Vec<f32> {
        let values: Vec<f32> = (0..dimensions).map(|_| rng.random_range(-1.0..1.0)).collect();
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        values.into_iter().map(|v| v / norm).collect()
    }

    fn recall_at_10(live: &LiveIndex, vectors: &[(u64, Vec<f32>)], queries: &[Vec<f32>]) -> f64 {
        let mut found = 0;
        for query in queries {
            let mut exact: Vec<(f32, u64)> =
                vectors.iter().map(|(key, vector)| (vector.iter().zip(query).map(|(a, b)| a * b).sum::<f32>(), *key)).collect();
            exact.sort_by(|a, b| b.0.total_cmp(&a.0));
            let truth: Vec<u64> = exact.iter().take(10).map(|(_, key)| *key).collect();
            let hits = live.search(query, 10).unwrap();
            found += hits.iter().filter(|hit| truth.contains(&hit.key)).count();
        }
        found as f64 / (queries.len() * 10) as f64
    }

    #[test]
    fn add_grows_capacity() {
        let live = LiveIndex::new(VectorIndex::create(4, &IndexSettings::default(), 1, 2).unwrap(), &IndexSettings::default(), 2);
        let mut rng = StdRng::seed_from_u64(1);
        for key in 0..300 {
            live.add(key, &random_unit(&mut rng, 4)).unwrap();
        }
        assert_eq!(live.len(), 300);
    }

    #[test]
    fn recall_after_deletes_and_rebuild() {
        let settings = IndexSettings::default();
        let mut rng = StdRng::seed_from_u64(7);
        let dimensions = 32;
        let live = LiveIndex::new(VectorIndex::create(dimensions, &settings, 3000, 2).unwrap(), &settings, 2);
        let mut vectors: Vec<(u64, Vec<f32>)> = (0..3000).map(|key| (key, random_unit(&mut rng, dimensions))).collect();
        for (key, vector) in &vectors {
            live.add(*key, vector).unwrap();
        }
        let queries: Vec<Vec<f32>> = (0..100).map(|_| random_unit(&mut rng, dimensions)).collect();

        let removed: Vec<(u64, Vec<f32>)> = vectors.iter().filter(|(key, _)| key % 10 < 3).cloned().collect();
        vectors.retain(|(key, _)| key % 10 >= 3);
        for (key, _) in &removed {
            assert!(live.remove(*key).unwrap());
        }
        assert!((live.removed_ratio() - 0.3).abs() < 1e-9);
        let before_rebuild = recall_at_10(&live, &vectors, &queries);

        let keys: Vec<u64> = vectors.iter().map(|(key, _)| *key).collect();
        let copied = live.copy(&keys).unwrap();
        assert!(copied.missing.is_empty());
        live.replace(copied.index);
        let after_rebuild = recall_at_10(&live, &vectors, &queries);
        assert_eq!(live.removed_ratio(), 0.0);
        assert!(after_rebuild >= 0.95, "recall@10 after the rebuild is {after_rebuild:.3} (before {before_rebuild:.3})");
        assert!(before_rebuild >= 0.90, "recall@10 with 30% removed and no rebuild is {before_rebuild:.3}");
    }
}
