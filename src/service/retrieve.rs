//! Turning a request into ranked items: the interest vector (query, positive and negative
//! examples), filtered candidates with an exact fallback for selective filters, fusion with
//! BM25 in hybrid mode, and maximal marginal relevance for diversity.

use std::collections::{HashMap, HashSet};

use super::{Recommender, ServiceError};
use crate::catalog::IndexHit;
use crate::filter::Filter;

/// Weight of the mean positive example in the interest vector (Rocchio's beta); the query
/// vector has weight 1.
pub const POSITIVE_WEIGHT: f32 = 0.75;
/// Weight of the mean negative example, subtracted (Rocchio's gamma).
pub const NEGATIVE_WEIGHT: f32 = 0.25;
/// Candidates taken from each list before fusion or re-ranking.
const RERANK_DEPTH: usize = 50;
/// Rank constant of reciprocal rank fusion (60, the usual choice in the literature).
const RRF_K: f32 = 60.0;

/// Candidate search method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Nearest item vectors only.
    Vector,
    /// Nearest item vectors fused with BM25 over item texts (reciprocal rank fusion).
    Hybrid,
}

/// An item that the shopper points at, with its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub id: String,
    pub weight: f32,
}

/// Combines the query vector and the example vectors into one unit interest vector:
/// `q + 0.75 * mean(positives) - 0.25 * mean(negatives)`, each mean weighted by the examples'
/// weights. Returns `None` when the result has no direction (nothing positive to go on).
pub fn interest_vector(query: Option<&[f32]>, positives: &[(Vec<f32>, f32)], negatives: &[(Vec<f32>, f32)], dimensions: usize) -> Option<Vec<f32>> {
    let mut interest = query.map(<[f32]>::to_vec).unwrap_or_else(|| vec![0.0; dimensions]);
    for (examples, weight) in [(positives, POSITIVE_WEIGHT), (negatives, -NEGATIVE_WEIGHT)] {
        let total: f32 = examples.iter().map(|(_, example_weight)| example_weight).sum();
        if total <= 0.0 {
            continue;
        }
        for (vector, example_weight) in examples {
            for (value, component) in interest.iter_mut().zip(vector) {
                *value += weight * example_weight / total * component;
            }
        }
    }
    let norm = interest.iter().map(|value| value * value).sum::<f32>().sqrt();
    (norm > 1e-6 && (query.is_some() || !positives.is_empty())).then(|| interest.iter().map(|value| value / norm).collect())
}

/// Re-ranks candidates by maximal marginal relevance: each next item maximises
/// `(1 - diversity) * score - diversity * (largest similarity to an item already chosen)`.
pub fn maximal_marginal_relevance(candidates: &[(IndexHit, Vec<f32>)], k: usize, diversity: f32) -> Vec<IndexHit> {
    let mut chosen: Vec<usize> = Vec::with_capacity(k);
    let mut left: Vec<usize> = (0..candidates.len()).collect();
    while chosen.len() < k && !left.is_empty() {
        let value = |index: usize| {
            let (hit, vector) = &candidates[index];
            let redundancy = chosen.iter().map(|&other| dot(vector, &candidates[other].1)).fold(f32::NEG_INFINITY, f32::max);
            let redundancy = if chosen.is_empty() { 0.0 } else { redundancy };
            (1.0 - diversity) * hit.score - diversity * redundancy
        };
        let (position, _) = left.iter().enumerate().map(|(position, &index)| (position, value(index))).fold((0, f32::NEG_INFINITY), |best, next| if next.1 > best.1 { next } else { best });
        chosen.push(left.remove(position));
    }
    chosen.into_iter().map(|index| candidates[index].0).collect()
}

/// Fuses rankings by summing `1 / (60 + rank)` per key, best first; ties go to the smaller key.
pub fn fuse<K: Copy + Eq + std::hash::Hash + Ord>(rankings: &[&[K]], depth: usize) -> Vec<K> {
    let mut scores: HashMap<K, f32> = HashMap::new();
    for ranking in rankings {
        for (rank, key) in ranking.iter().enumerate() {
            *scores.entry(*key).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
    }
    let mut fused: Vec<(K, f32)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused.into_iter().take(depth).map(|(key, _)| key).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Constraints of a candidate search besides the vector.
pub struct Constraints<'a> {
    pub filter: Option<&'a Filter>,
    pub exclude: &'a HashSet<u64>,
}

impl Recommender {
    /// Returns up to `depth` items nearest to `vector` that pass the constraints, best first.
    /// When the graph search finds fewer than `depth` (a selective filter), every item that
    /// passes the filter is scored exactly, so `depth` come back whenever that many exist.
    pub(super) fn nearest(&self, vector: &[f32], depth: usize, constraints: &Constraints) -> Result<Vec<IndexHit>, ServiceError> {
        let Constraints { filter, exclude } = constraints;
        let keep = |key: u64| !exclude.contains(&key) && filter.is_none_or(|filter| self.attributes.passes(key, filter));
        if filter.is_none() && exclude.is_empty() {
            return Ok(self.index.search(vector, depth)?);
        }
        let hits = self.index.filtered_search(vector, depth, keep)?;
        let Some(filter) = filter else { return Ok(hits) };
        if hits.len() >= depth {
            return Ok(hits);
        }
        let matching: Vec<u64> = self.attributes.matching(filter).into_iter().filter(|key| !exclude.contains(key)).collect();
        if matching.len() <= hits.len() {
            return Ok(hits);
        }
        let mut scored = Vec::with_capacity(matching.len());
        for key in matching {
            if let Some(item) = self.index.vector(key)? {
                scored.push(IndexHit { key, score: dot(vector, &item) });
            }
        }
        scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key)));
        scored.truncate(depth);
        Ok(scored)
    }

    /// Ranks items for an interest vector: nearest items (fused with BM25 for `lexical_query`
    /// in hybrid mode), then re-ranked for diversity when asked.
    pub(super) fn rank(&self, vector: &[f32], k: usize, lexical_query: Option<&str>, diversity: f32, constraints: &Constraints) -> Result<Vec<IndexHit>, ServiceError> {
        let reranked = lexical_query.is_some() || diversity > 0.0;
        // A few spare hits replace items deleted between the search and the database read.
        let depth = if reranked { (3 * k).max(RERANK_DEPTH) } else { k + 4 };
        let mut hits = self.nearest(vector, depth, constraints)?;

        if let Some(text) = lexical_query {
            let Constraints { filter, exclude } = constraints;
            let lexical: Vec<u64> = self
                .lexical
                .search(text, depth * 2)
                .map_err(|err| ServiceError::Internal(err.to_string()))?
                .into_iter()
                .filter(|key| !exclude.contains(key) && filter.is_none_or(|filter| self.attributes.passes(*key, filter)))
                .take(depth)
                .collect();
            let vector_keys: Vec<u64> = hits.iter().map(|hit| hit.key).collect();
            let scores: HashMap<u64, f32> = hits.iter().map(|hit| (hit.key, hit.score)).collect();
            let mut fused = Vec::with_capacity(depth);
            for key in fuse(&[&vector_keys, &lexical], depth) {
                let score = match scores.get(&key) {
                    Some(score) => Some(*score),
                    None => self.index.vector(key)?.map(|item| dot(vector, &item)),
                };
                if let Some(score) = score {
                    fused.push(IndexHit { key, score });
                }
            }
            hits = fused;
        }

        if diversity > 0.0 {
            let mut candidates = Vec::with_capacity(hits.len());
            for hit in hits {
                if let Some(item) = self.index.vector(hit.key)? {
                    candidates.push((hit, item));
                }
            }
            return Ok(maximal_marginal_relevance(&candidates, k + 4, diversity));
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_move_the_interest() {
        let query = [1.0, 0.0, 0.0];
        let toward = interest_vector(Some(&query), &[(vec![0.0, 1.0, 0.0], 1.0)], &[], 3).unwrap();
        assert!(toward[0] > 0.5);
        assert!(toward[1] > 0.5);
        let away = interest_vector(Some(&query), &[], &[(vec![0.0, 1.0, 0.0], 1.0)], 3).unwrap();
        assert!(away[1] < 0.0);
        let examples_only = interest_vector(None, &[(vec![0.0, 0.0, 1.0], 2.0), (vec![0.0, 1.0, 0.0], 2.0)], &[], 3).unwrap();
        assert!((examples_only[1] - examples_only[2]).abs() < 1e-6);
    }

    #[test]
    fn negatives_alone_give_no_interest() {
        assert!(interest_vector(None, &[], &[(vec![0.0, 1.0], 1.0)], 2).is_none());
        assert!(interest_vector(None, &[], &[], 2).is_none());
    }

    #[test]
    fn diversity_skips_near_duplicates() {
        let hit = |key, score| IndexHit { key, score };
        let candidates = vec![(hit(1, 0.9), vec![1.0, 0.0]), (hit(2, 0.89), vec![1.0, 0.0]), (hit(3, 0.7), vec![0.0, 1.0])];
        let plain: Vec<u64> = maximal_marginal_relevance(&candidates, 2, 0.0).iter().map(|hit| hit.key).collect();
        assert_eq!(plain, vec![1, 2]);
        let diverse: Vec<u64> = maximal_marginal_relevance(&candidates, 2, 0.5).iter().map(|hit| hit.key).collect();
        assert_eq!(diverse, vec![1, 3]);
    }

    #[test]
    fn fusion_rewards_agreement() {
        assert_eq!(fuse(&[&[1, 2, 3], &[4, 2, 5]], 10)[0], 2);
    }
}
