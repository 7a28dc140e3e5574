//! Batches of history targets and their ranking quality: hit rate and nDCG at 10 for the
//! next item, over the whole catalogue minus the items the shopper already had.

use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

use super::{HistoryTarget, HistoryWeights, Sequence};
use crate::pooling::PoolingError;

/// Items a ranking is scored on.
pub const CUTOFF: usize = 10;
/// Targets scored at once.
const CHUNK: usize = 256;

/// Training and measuring input of the history attention.
pub struct HistoryData {
    /// (items, d): the unit vectors the index holds for each catalogue row.
    pub items: Tensor,
    /// (queries, d): unit query vectors for the query rows that steps refer to.
    pub queries: Option<Tensor>,
    pub sequences: Vec<Sequence>,
}

/// Method that ranks the catalogue for a target step.
pub enum Ranker<'a> {
    /// The same scores for everyone (item popularity), one per catalogue row.
    Fixed(&'a [f32]),
    /// The step's query vector alone.
    QueryOnly,
    /// History attention with these weights, with the step's query when there is one.
    Attention(&'a HistoryWeights),
}

/// Mean ranking quality over targets.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SequentialMetrics {
    pub targets: usize,
    pub hit_rate_at_10: f64,
    pub ndcg_at_10: f64,
}

/// The tensors of a batch of targets.
pub(super) struct Batch {
    pub queries: Tensor,
    pub has_query: Tensor,
    /// (batch, n, d), most recent first, zero rows on padding.
    pub items: Tensor,
    pub mask: Tensor,
    /// Per target: every item before it, which its ranking leaves out.
    pub seen: Vec<Vec<usize>>,
    pub targets: Vec<usize>,
}

/// Whether a target's query is given to the model.
#[derive(Clone, Copy)]
pub(super) enum QueryUse<'a> {
    Never,
    Always,
    /// Dropped at random with this probability, so one model learns both cases.
    DropWith(f64, &'a std::cell::RefCell<StdRng>),
}

impl HistoryData {
    pub(super) fn batch(&self, targets: &[HistoryTarget], max_items: usize, queries: QueryUse) -> Result<Batch, PoolingError> {
        let device = self.items.device();
        let dim = self.items.dim(1)?;
        let histories: Vec<Vec<usize>> = targets.iter().map(|target| self.sequences[target.sequence].history_before(target.position, max_items)).collect();
        let width = histories.iter().map(Vec::len).max().unwrap_or(0).max(1);

        let mut rows = Vec::with_capacity(targets.len() * width);
        let mut mask = Vec::with_capacity(targets.len() * width);
        for history in &histories {
            for slot in 0..width {
                rows.push(history.get(slot).copied().unwrap_or(0) as u32);
                mask.push(if slot < history.len() { 1f32 } else { 0.0 });
            }
        }
        let mask = Tensor::from_vec(mask, (targets.len(), width), device)?;
        let items = self.items.index_select(&Tensor::new(rows, device)?, 0)?.reshape((targets.len(), width, dim))?.broadcast_mul(&mask.unsqueeze(2)?)?;

        let mut query_rows = Vec::with_capacity(targets.len());
        let mut has_query = Vec::with_capacity(targets.len());
        for target in targets {
            let row = self.sequences[target.sequence].steps[target.position].query.filter(|_| match queries {
                QueryUse::Never => false,
                QueryUse::Always => true,
                QueryUse::DropWith(probability, rng) => !rng.borrow_mut().random_bool(probability),
            });
            query_rows.push(row.unwrap_or(0) as u32);
            has_query.push(if row.is_some() { 1f32 } else { 0.0 });
        }
        let has_query = Tensor::from_vec(has_query, targets.len(), device)?;
        let queries = match &self.queries {
            Some(vectors) => vectors.index_select(&Tensor::new(query_rows, device)?, 0)?.broadcast_mul(&has_query.unsqueeze(1)?)?,
            None => Tensor::zeros((targets.len(), dim), DType::F32, device)?,
        };

        let seen = targets.iter().map(|target| self.sequences[target.sequence].seen_before(target.position)).collect();
        let targets = targets.iter().map(|target| self.sequences[target.sequence].steps[target.position].item).collect();
        Ok(Batch { queries, has_query, items, mask, seen, targets })
    }

    /// Scores each target's next item with `ranker` and averages hit rate and nDCG at 10.
    /// `use_queries` gives the steps' queries to the rankers that read them; `exclude_seen`
    /// leaves the items before each step out of its ranking.
    pub fn measure(&self, targets: &[HistoryTarget], ranker: &Ranker, use_queries: bool, max_items: usize, exclude_seen: bool) -> Result<SequentialMetrics, PoolingError> {
        let (mut hits, mut gains) = (0.0, 0.0);
        let queries = if use_queries { QueryUse::Always } else { QueryUse::Never };
        for chunk in targets.chunks(CHUNK) {
            let batch = self.batch(chunk, max_items, queries)?;
            let scores = match ranker {
                Ranker::Fixed(scores) => Tensor::new(*scores, self.items.device())?.unsqueeze(0)?.repeat((chunk.len(), 1))?,
                Ranker::QueryOnly => batch.queries.matmul(&self.items.t()?)?,
                Ranker::Attention(weights) => weights.attend(&batch.queries, &batch.has_query, &batch.items, &batch.mask)?.vectors.matmul(&self.items.t()?)?,
            };
            for ((row, seen), target) in scores.to_vec2::<f32>()?.iter_mut().zip(&batch.seen).zip(&batch.targets) {
                if let Some(rank) = rank_of(row, if exclude_seen { seen } else { &[] }, *target) {
                    hits += 1.0;
                    gains += 1.0 / (rank as f64 + 2.0).log2();
                }
            }
        }
        let count = targets.len().max(1) as f64;
        Ok(SequentialMetrics { targets: targets.len(), hit_rate_at_10: hits / count, ndcg_at_10: gains / count })
    }
}

/// Returns the target's rank among the top [`CUTOFF`] of `scores` once `seen` items are left out.
fn rank_of(scores: &mut [f32], seen: &[usize], target: usize) -> Option<usize> {
    for &item in seen {
        if item != target {
            scores[item] = f32::NEG_INFINITY;
        }
    }
    let score = scores[target];
    // Ties go against the target, so a constant ranker earns nothing by luck.
    let better = scores.iter().enumerate().filter(|(item, value)| **value > score || (**value == score && *item < target)).count();
    (better < CUTOFF).then_some(better)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_leaves_out_seen_items() {
        let mut scores = vec![0.9, 0.8, 0.1, 0.5];
        assert_eq!(rank_of(&mut scores.clone(), &[], 3), Some(2));
        assert_eq!(rank_of(&mut scores, &[0, 1], 3), Some(0));
        let mut many: Vec<f32> = (0..20).map(|value| value as f32).collect();
        assert_eq!(rank_of(&mut many, &[], 0), None);
    }
}
