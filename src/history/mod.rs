//! History-aware interest: attention over the items a shopper acted on last, conditioned on
//! the query, so that the query decides which past items matter.
//!
//! For a unit query vector `u` (the pooled query, or none) and the stored unit vectors
//! `e_1..e_n` of the last `n` history items, most recent first:
//! `c = u` (or `normalize(mean(e))` without a query),
//! `s_j = sharpness * c . (W_hist e_j) + recency_j`, `a = softmax(s)`, `p = sum_j a_j e_j`,
//! and the interest is `normalize(u + mix * p)`, or `normalize(p)` without a query.
//! With no history the interest is `u` itself, so a request without history ranks exactly as
//! before.

mod measure;
mod sequences;
mod train;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub use measure::{HistoryData, Ranker, SequentialMetrics};
pub use sequences::{leave_last_out, sequences_by_user, HistoryTarget, Sequence, SequenceSplit, SequenceStep};
pub use train::{train_history, HistoryEpoch, HistoryReport, HistoryTrainOptions};

use crate::pooling::{l2_normalize, masked_mean, masked_softmax, save_named, values_checksum, PoolingError};

/// Errors of the history attention: its weights file and its training data.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Weights(#[from] PoolingError),
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("not enough history to train on: {0}")]
    NotEnoughData(String),
}

/// Tensor names in a history weights file.
pub const W_HIST: &str = "w_hist";
pub const SHARPNESS: &str = "sharpness";
pub const RECENCY: &str = "recency";
pub const MIX: &str = "mix";

/// Sharpness of the untrained attention. Cosine similarities of related and unrelated items
/// differ by a few tenths, and this turns such a gap into a clear preference.
const UNTRAINED_SHARPNESS: f32 = 10.0;
/// Weight of the history summary beside the query in the untrained weights.
const UNTRAINED_MIX: f32 = 0.5;

/// The learned parameters of the history attention.
#[derive(Clone)]
pub struct HistoryWeights {
    /// (d, d): compares the context with each history item.
    pub w_hist: Tensor,
    /// (1): scales the comparison before the softmax.
    pub sharpness: Tensor,
    /// (max_items): added to the score of the item at each age, the most recent first.
    pub recency: Tensor,
    /// (1): weight of the history summary added to the query vector.
    pub mix: Tensor,
}

/// Interest vectors and the attention over the history that produced them.
pub struct HistoryInterest {
    /// (batch, d), unit length (zero for a row with neither query nor history).
    pub vectors: Tensor,
    /// (batch, n): weight of each history item, 0 on padding; rows with history sum to 1.
    pub attention: Tensor,
}

impl HistoryWeights {
    /// Attention by similarity to the context, no preference for recent items.
    pub fn untrained(dim: usize, max_items: usize, device: &Device) -> Result<Self, PoolingError> {
        Ok(Self {
            w_hist: Tensor::eye(dim, DType::F32, device)?,
            sharpness: Tensor::new(&[UNTRAINED_SHARPNESS], device)?,
            recency: Tensor::zeros(max_items, DType::F32, device)?,
            mix: Tensor::new(&[UNTRAINED_MIX], device)?,
        })
    }

    /// Equal attention to every history item: the interest adds the plain mean of the history
    /// to the query, or is that mean without a query. The history-mean baseline.
    pub fn uniform(dim: usize, max_items: usize, device: &Device) -> Result<Self, PoolingError> {
        Ok(Self { sharpness: Tensor::new(&[0f32], device)?, ..Self::untrained(dim, max_items, device)? })
    }

    /// Loads weights saved by [`HistoryWeights::save`] for a `dim`-wide encoder.
    pub fn load(path: &Path, dim: usize, device: &Device) -> Result<Self, PoolingError> {
        let path_text = path.display().to_string();
        let mut tensors = candle_core::safetensors::load(path, device)
            .map_err(|err| PoolingError::Load { path: path_text.clone(), message: err.to_string() })?;
        let mut take = |name: &'static str, expected: Option<&[usize]>| -> Result<Tensor, PoolingError> {
            let tensor = tensors.remove(name).ok_or(PoolingError::MissingTensor { path: path_text.clone(), name })?;
            if expected.is_some_and(|shape| tensor.dims() != shape) || tensor.rank() != expected.map_or(1, <[usize]>::len) {
                return Err(PoolingError::WrongShape { name, found: tensor.dims().to_vec(), dim });
            }
            Ok(tensor.to_dtype(DType::F32)?)
        };
        Ok(Self {
            w_hist: take(W_HIST, Some(&[dim, dim]))?,
            sharpness: take(SHARPNESS, Some(&[1]))?,
            recency: take(RECENCY, None)?,
            mix: take(MIX, Some(&[1]))?,
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), PoolingError> {
        save_named(&[(W_HIST, &self.w_hist), (SHARPNESS, &self.sharpness), (RECENCY, &self.recency), (MIX, &self.mix)], path)
    }

    /// Most history items the weights have a recency bias for.
    pub fn max_items(&self) -> usize {
        self.recency.dims()[0]
    }

    /// Hashes the parameter values.
    pub fn checksum(&self) -> Result<String, PoolingError> {
        values_checksum(&[&self.w_hist, &self.sharpness, &self.recency, &self.mix])
    }

    /// Copies the weights out of a training graph.
    pub fn detached(&self) -> Result<Self, PoolingError> {
        Ok(Self { w_hist: self.w_hist.detach().copy()?, sharpness: self.sharpness.detach().copy()?, recency: self.recency.detach().copy()?, mix: self.mix.detach().copy()? })
    }

    /// Combines query vectors with history items.
    ///
    /// `queries` is (batch, d) with unit rows. `has_query` (batch) is 1 where the row has a
    /// query and 0 where history alone decides, so that row of `queries` is ignored. `items`
    /// is (batch, n, d) with unit rows, the most recent first, and `mask` (batch, n) is 1 on
    /// real items. `n` may not exceed [`HistoryWeights::max_items`].
    pub fn attend(&self, queries: &Tensor, has_query: &Tensor, items: &Tensor, mask: &Tensor) -> Result<HistoryInterest, PoolingError> {
        let n = items.dim(1)?;
        let with_query = has_query.unsqueeze(1)?;
        let without_query = (1.0 - &with_query)?;

        // The context is the query, or the direction of the history itself without one.
        let history_mean = l2_normalize(&masked_mean(items, mask)?)?;
        let context = (queries.broadcast_mul(&with_query)? + history_mean.broadcast_mul(&without_query)?)?;

        let keys = items.broadcast_matmul(&self.w_hist.t()?)?;
        let agreement = keys.matmul(&context.unsqueeze(2)?)?.squeeze(2)?;
        let scores = agreement.broadcast_mul(&self.sharpness)?.broadcast_add(&self.recency.narrow(0, 0, n)?)?;
        let attention = masked_softmax(&scores, mask)?;
        let summary = attention.unsqueeze(1)?.matmul(items)?.squeeze(1)?;

        let with_history = (queries + summary.broadcast_mul(&self.mix)?)?;
        let combined = (with_history.broadcast_mul(&with_query)? + summary.broadcast_mul(&without_query)?)?;
        Ok(HistoryInterest { vectors: l2_normalize(&combined)?, attention })
    }

    /// Interest of one request: `query` (unit, or none) and its history item vectors, most
    /// recent first. Returns the unit interest and each history item's weight. At most
    /// [`HistoryWeights::max_items`] items are used; the caller keeps the most recent ones.
    pub fn attend_one(&self, query: Option<&[f32]>, history: &[Vec<f32>]) -> Result<(Vec<f32>, Vec<f32>), PoolingError> {
        let device = self.w_hist.device();
        let dim = self.w_hist.dims()[0];
        let n = history.len().min(self.max_items());
        let flat: Vec<f32> = history.iter().take(n).flat_map(|vector| vector.iter().copied()).collect();
        let items = Tensor::from_vec(flat, (1, n, dim), device)?;
        let mask = Tensor::ones((1, n), DType::F32, device)?;
        let queries = Tensor::from_vec(query.map(<[f32]>::to_vec).unwrap_or_else(|| vec![0.0; dim]), (1, dim), device)?;
        let has_query = Tensor::new(&[if query.is_some() { 1f32 } else { 0.0 }], device)?;
        let interest = self.attend(&queries, &has_query, &items, &mask)?;
        Ok((interest.vectors.squeeze(0)?.to_vec1()?, interest.attention.squeeze(0)?.to_vec1()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks a (batch, n) attention: zero on padding, each row with history sums to one.
    fn assert_attention_rows(attention: &[Vec<f32>], lengths: &[usize]) {
        for (row, &length) in attention.iter().zip(lengths) {
            let total: f32 = row.iter().sum();
            if length > 0 {
                assert!((total - 1.0).abs() < 1e-5, "row sums to {total}");
            }
            assert!(row[length..].iter().all(|weight| *weight == 0.0), "padding has weight: {row:?}");
        }
    }

    fn unit(values: &[f32]) -> Vec<f32> {
        let norm = values.iter().map(|value| value * value).sum::<f32>().sqrt();
        values.iter().map(|value| value / norm).collect()
    }

    fn weights() -> HistoryWeights {
        HistoryWeights::untrained(3, 4, &Device::Cpu).unwrap()
    }

    #[test]
    fn query_chooses_the_matching_past_item() {
        let sneakers = unit(&[1.0, 0.1, 0.0]);
        let kettle = unit(&[0.0, 0.1, 1.0]);
        let running_shoes = unit(&[0.9, 0.3, 0.1]);
        let (interest, attention) = weights().attend_one(Some(&running_shoes), &[kettle.clone(), sneakers.clone()]).unwrap();
        assert!(attention[1] > 0.95, "sneakers get {attention:?}");
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!(dot(&interest, &sneakers) > dot(&running_shoes, &sneakers), "the interest moves toward the sneakers");
        assert!(dot(&interest, &kettle) < 0.3);

        let (_, attention) = weights().attend_one(Some(&unit(&[0.1, 0.2, 1.0])), &[kettle, sneakers]).unwrap();
        assert!(attention[0] > 0.95, "a kettle query looks at the kettle: {attention:?}");
    }

    #[test]
    fn history_alone_decides_without_a_query() {
        let items = [unit(&[1.0, 0.0, 0.0]), unit(&[0.9, 0.1, 0.0])];
        let (interest, attention) = weights().attend_one(None, &items).unwrap();
        assert!((attention.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(interest[0] > 0.99, "{interest:?}");
    }

    #[test]
    fn attend_masks_padding_per_row() {
        let device = Device::Cpu;
        let items = Tensor::from_vec(
            vec![1f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, /* second row */ 0.0, 1.0, 0.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0],
            (2, 3, 3),
            &device,
        )
        .unwrap();
        let mask = Tensor::new(&[[1f32, 1.0, 1.0], [1.0, 0.0, 0.0]], &device).unwrap();
        let queries = Tensor::new(&[[1f32, 0.0, 0.0], [0.0, 0.0, 1.0]], &device).unwrap();
        let has_query = Tensor::new(&[1f32, 1.0], &device).unwrap();
        let interest = weights().attend(&queries, &has_query, &items, &mask).unwrap();
        assert_attention_rows(&interest.attention.to_vec2().unwrap(), &[3, 1]);

        let (alone, _) = weights().attend_one(Some(&[0.0, 0.0, 1.0]), &[vec![0.0, 1.0, 0.0]]).unwrap();
        let batched = interest.vectors.to_vec2::<f32>().unwrap();
        for (a, b) in alone.iter().zip(&batched[1]) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn recency_bias_prefers_recent_items() {
        let mut weights = weights();
        weights.sharpness = Tensor::new(&[0f32], &Device::Cpu).unwrap();
        weights.recency = Tensor::new(&[2f32, 0.0, 0.0, 0.0], &Device::Cpu).unwrap();
        let (_, attention) = weights.attend_one(None, &[unit(&[1.0, 0.0, 0.0]), unit(&[0.0, 1.0, 0.0])]).unwrap();
        assert!(attention[0] > 0.85, "{attention:?}");
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.safetensors");
        let mut saved = weights();
        saved.mix = Tensor::new(&[0.25f32], &Device::Cpu).unwrap();
        saved.save(&path).unwrap();
        let loaded = HistoryWeights::load(&path, 3, &Device::Cpu).unwrap();
        assert_eq!(loaded.checksum().unwrap(), saved.checksum().unwrap());
        assert_eq!(loaded.max_items(), 4);
        assert!(matches!(HistoryWeights::load(&path, 5, &Device::Cpu), Err(PoolingError::WrongShape { .. })));
    }
}
