//! The HNSW vector index (usearch), inner product over unit vectors.

use std::path::Path;

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::CatalogError;
use crate::config::{IndexSettings, ScalarChoice};

/// One search result: the item key and its score `u . e`, higher is better.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexHit {
    pub key: u64,
    pub score: f32,
}

pub struct VectorIndex {
    inner: Index,
}

fn index_error(err: impl std::fmt::Display) -> CatalogError {
    CatalogError::Index(err.to_string())
}

fn options(dimensions: usize, settings: &IndexSettings) -> IndexOptions {
    IndexOptions {
        dimensions,
        // Vectors are unit length, so inner product is cosine similarity; usearch returns it
        // as the distance 1 - u.e.
        metric: MetricKind::IP,
        quantization: match settings.scalar {
            ScalarChoice::F32 => ScalarKind::F32,
            ScalarChoice::F16 => ScalarKind::F16,
        },
        connectivity: settings.connectivity,
        expansion_add: settings.expansion_add,
        expansion_search: settings.expansion_search,
        multi: false,
    }
}

impl VectorIndex {
    /// Creates an empty index with room for `capacity` vectors and `threads` concurrent users.
    pub fn create(dimensions: usize, settings: &IndexSettings, capacity: usize, threads: usize) -> Result<Self, CatalogError> {
        let inner = Index::new(&options(dimensions, settings)).map_err(index_error)?;
        inner.reserve_capacity_and_threads(capacity.max(16), threads.max(1)).map_err(index_error)?;
        Ok(Self { inner })
    }

    /// Loads a saved index fully into memory, ready for `threads` concurrent searches.
    pub fn load(path: &Path, dimensions: usize, settings: &IndexSettings, threads: usize) -> Result<Self, CatalogError> {
        let inner = Index::new(&options(dimensions, settings)).map_err(index_error)?;
        inner.load(&path.to_string_lossy()).map_err(index_error)?;
        if inner.dimensions() != dimensions {
            return Err(CatalogError::Index(format!(
                "{} contains {}-dimensional vectors, expected {dimensions}",
                path.display(),
                inner.dimensions()
            )));
        }
        // Searches from several threads each need a context of their own.
        inner.reserve_capacity_and_threads(inner.capacity().max(inner.size()), threads.max(1)).map_err(index_error)?;
        inner.change_expansion_search(settings.expansion_search);
        Ok(Self { inner })
    }

    pub fn add(&self, key: u64, vector: &[f32]) -> Result<(), CatalogError> {
        if self.inner.size() >= self.inner.capacity() {
            let grown = (self.inner.capacity() * 2).max(16);
            self.inner.reserve(grown).map_err(index_error)?;
        }
        self.inner.add(key, vector).map_err(index_error)
    }

    /// Removes a key's vector; returns whether it was present.
    pub fn remove(&self, key: u64) -> Result<bool, CatalogError> {
        Ok(self.inner.remove(key).map_err(index_error)? > 0)
    }

    pub fn contains(&self, key: u64) -> bool {
        self.inner.contains(key)
    }

    /// Returns a copy of a key's vector, or `None` when the key is not in the index.
    pub fn vector(&self, key: u64) -> Result<Option<Vec<f32>>, CatalogError> {
        let mut vector = vec![0.0f32; self.inner.dimensions()];
        let found = self.inner.get(key, &mut vector).map_err(index_error)?;
        Ok((found > 0).then_some(vector))
    }

    /// Returns the number of graph nodes of removed vectors that the index still contains.
    /// It counts every node, so call it rarely (after loading, not per request).
    pub fn removed_nodes(&self) -> usize {
        self.inner.stats().nodes.saturating_sub(self.inner.size())
    }

    /// Returns up to `k` nearest items, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<IndexHit>, CatalogError> {
        let matches = self.inner.search(query, k).map_err(index_error)?;
        Ok(matches.keys.into_iter().zip(matches.distances).map(|(key, distance)| IndexHit { key, score: 1.0 - distance }).collect())
    }

    /// Returns up to `k` nearest items among those whose key passes `keep`, best first. The
    /// graph search may return fewer than `k` when few items pass.
    pub fn filtered_search(&self, query: &[f32], k: usize, keep: impl Fn(u64) -> bool) -> Result<Vec<IndexHit>, CatalogError> {
        let matches = self.inner.filtered_search(query, k, keep).map_err(index_error)?;
        Ok(matches.keys.into_iter().zip(matches.distances).map(|(key, distance)| IndexHit { key, score: 1.0 - distance }).collect())
    }

    /// Returns the true `k` nearest items by scanning every vector.
    pub fn exact_search(&self, query: &[f32], k: usize) -> Result<Vec<IndexHit>, CatalogError> {
        let matches = self.inner.exact_search(query, k).map_err(index_error)?;
        Ok(matches.keys.into_iter().zip(matches.distances).map(|(key, distance)| IndexHit { key, score: 1.0 - distance }).collect())
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// Grows the room for vectors. Not safe while other threads use the index.
    pub fn reserve(&self, capacity: usize) -> Result<(), CatalogError> {
        self.inner.reserve(capacity).map_err(index_error)
    }

    pub fn len(&self) -> usize {
        self.inner.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }

    /// Writes the index to a temporary file beside `path`, flushes it to disk and renames it
    /// into place, so a crash leaves either the old file or the new one, never a partial file.
    pub fn save(&self, path: &Path) -> Result<(), CatalogError> {
        let partial = path.with_extension("usearch.partial");
        self.inner.save(&partial.to_string_lossy()).map_err(index_error)?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CatalogError::Io { path, source }
        };
        std::fs::File::open(&partial).and_then(|file| file.sync_all()).map_err(io(&partial))?;
        std::fs::rename(&partial, path).map_err(io(path))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(io(dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(values: &[f32]) -> Vec<f32> {
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        values.iter().map(|v| v / norm).collect()
    }

    #[test]
    fn search_ranks_by_inner_product() {
        let index = VectorIndex::create(3, &IndexSettings::default(), 4, 1).unwrap();
        index.add(1, &unit(&[1.0, 0.0, 0.0])).unwrap();
        index.add(2, &unit(&[0.0, 1.0, 0.0])).unwrap();
        index.add(3, &unit(&[1.0, 1.0, 0.0])).unwrap();

        let hits = index.search(&unit(&[1.0, 0.2, 0.0]), 3).unwrap();
        let keys: Vec<u64> = hits.iter().map(|hit| hit.key).collect();
        assert_eq!(keys, vec![1, 3, 2]);
        assert!((hits[0].score - unit(&[1.0, 0.2, 0.0])[0]).abs() < 1e-5);
    }

    #[test]
    fn k_larger_than_index_returns_all() {
        let index = VectorIndex::create(2, &IndexSettings::default(), 2, 1).unwrap();
        index.add(5, &unit(&[1.0, 0.0])).unwrap();
        assert_eq!(index.search(&unit(&[1.0, 0.0]), 10).unwrap().len(), 1);
    }

    #[test]
    fn removed_keys_not_found() {
        let index = VectorIndex::create(2, &IndexSettings::default(), 4, 1).unwrap();
        index.add(1, &unit(&[1.0, 0.0])).unwrap();
        index.add(2, &unit(&[0.0, 1.0])).unwrap();
        assert_eq!(index.vector(2).unwrap().unwrap(), unit(&[0.0, 1.0]));

        assert!(index.remove(1).unwrap());
        assert!(!index.remove(1).unwrap());
        assert!(!index.contains(1));
        assert_eq!(index.vector(1).unwrap(), None);
        assert_eq!(index.len(), 1);
        let keys: Vec<u64> = index.search(&unit(&[1.0, 0.0]), 5).unwrap().iter().map(|hit| hit.key).collect();
        assert_eq!(keys, vec![2]);
    }

    #[test]
    fn save_and_load_give_same_results() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("items.usearch");
        let index = VectorIndex::create(2, &IndexSettings::default(), 2, 1).unwrap();
        for key in 0..40u64 {
            let angle = key as f32 * 0.1;
            index.add(key, &[angle.cos(), angle.sin()]).unwrap();
        }
        index.save(&path).unwrap();

        let loaded = VectorIndex::load(&path, 2, &IndexSettings::default(), 2).unwrap();
        assert_eq!(loaded.len(), 40);
        assert_eq!(loaded.search(&[1.0, 0.0], 5).unwrap(), index.search(&[1.0, 0.0], 5).unwrap());
    }
}
