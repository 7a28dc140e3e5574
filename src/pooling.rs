//! The dynamic-attention pooling head.
//!
//! For a query with token states `H` (n x d) and mask `m`:
//! `c = masked_mean(H)`, `s_i = h_i . (W_attn c) / sqrt(d)`, `a = masked_softmax(s)`,
//! `v = sum_i a_i h_i`, `u = normalize(W_q v)`. Items are pooled as
//! `e = normalize(W_score masked_mean(H))`, and an item's score is `u . e`.
//! With `W_attn = 0`, `W_q = I` and `W_score = I` this is mean pooling.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use sha2::{Digest, Sha256};

use crate::encoder::TokenStates;

/// Tensor names in `head.safetensors`; each is a (d, d) f32 matrix applied as `W x`.
pub const W_ATTN: &str = "w_attn";
pub const W_Q: &str = "w_q";
pub const W_SCORE: &str = "w_score";

/// Keeps normalisation finite for an all-zero vector, which then stays zero.
const NORM_EPSILON: f64 = 1e-12;

#[derive(Debug, thiserror::Error)]
pub enum PoolingError {
    #[error("failed to read head file {path}: {message}")]
    Load { path: String, message: String },
    #[error("head file {path} has no tensor `{name}`; expected {W_ATTN}, {W_Q} and {W_SCORE}")]
    MissingTensor { path: String, name: &'static str },
    #[error("head tensor `{name}` has shape {found:?}, expected [{dim}, {dim}] for a {dim}-dimensional encoder")]
    WrongShape { name: &'static str, found: Vec<usize>, dim: usize },
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Pooled queries and the attention that produced them.
pub struct PooledQueries {
    /// (batch, d), unit length.
    pub vectors: Tensor,
    /// (batch, n): attention weights over tokens, 0 on padding, each row sums to 1.
    pub attention: Tensor,
}

/// The learned parameters of the head.
#[derive(Clone)]
pub struct AttentionHead {
    pub w_attn: Tensor,
    pub w_q: Tensor,
    pub w_score: Tensor,
}

impl AttentionHead {
    /// Creates the untrained head, which pools exactly like mean pooling.
    pub fn untrained(dim: usize, device: &Device) -> Result<Self, PoolingError> {
        Ok(Self {
            w_attn: Tensor::zeros((dim, dim), DType::F32, device)?,
            w_q: Tensor::eye(dim, DType::F32, device)?,
            w_score: Tensor::eye(dim, DType::F32, device)?,
        })
    }

    /// Loads a head saved by [`AttentionHead::save`] and checks it fits a `dim`-wide encoder.
    pub fn load(path: &Path, dim: usize, device: &Device) -> Result<Self, PoolingError> {
        let path_text = path.display().to_string();
        let mut tensors = candle_core::safetensors::load(path, device)
            .map_err(|err| PoolingError::Load { path: path_text.clone(), message: err.to_string() })?;
        let mut take = |name: &'static str| -> Result<Tensor, PoolingError> {
            let tensor = tensors.remove(name).ok_or(PoolingError::MissingTensor { path: path_text.clone(), name })?;
            if tensor.dims() != [dim, dim] {
                return Err(PoolingError::WrongShape { name, found: tensor.dims().to_vec(), dim });
            }
            Ok(tensor.to_dtype(DType::F32)?)
        };
        Ok(Self { w_attn: take(W_ATTN)?, w_q: take(W_Q)?, w_score: take(W_SCORE)? })
    }

    /// Writes the three matrices to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), PoolingError> {
        save_named(&[(W_ATTN, &self.w_attn), (W_Q, &self.w_q), (W_SCORE, &self.w_score)], path)
    }

    pub fn dim(&self) -> usize {
        self.w_q.dims()[0]
    }

    /// Hashes the parameter values, so two files with the same head have the same checksum.
    pub fn checksum(&self) -> Result<String, PoolingError> {
        values_checksum(&[&self.w_attn, &self.w_q, &self.w_score])
    }

    /// Pools query token states into unit interest vectors, returning the attention too.
    pub fn pool_queries(&self, states: &TokenStates) -> Result<PooledQueries, PoolingError> {
        let hidden = &states.hidden;
        let dim = hidden.dim(D::Minus1)?;

        // The context c is the plain mean of the token states, and each token's score is
        // its agreement with W_attn c.
        let context = masked_mean(hidden, &states.mask)?;
        let key = context.matmul(&self.w_attn.t()?)?;
        let scores = hidden.matmul(&key.unsqueeze(2)?)?.squeeze(2)?;
        let scores = (scores / (dim as f64).sqrt())?;
        let attention = masked_softmax(&scores, &states.mask)?;

        let pooled = attention.unsqueeze(1)?.matmul(hidden)?.squeeze(1)?;
        let projected = pooled.matmul(&self.w_q.t()?)?;
        Ok(PooledQueries { vectors: l2_normalize(&projected)?, attention })
    }

    /// Pools item token states into the unit vectors stored in the index.
    pub fn pool_items(&self, states: &TokenStates) -> Result<Tensor, PoolingError> {
        let mean = masked_mean(&states.hidden, &states.mask)?;
        Ok(l2_normalize(&mean.matmul(&self.w_score.t()?)?)?)
    }
}

/// Writes named f32 tensors to a safetensors file.
pub fn save_named(tensors: &[(&str, &Tensor)], path: &Path) -> Result<(), PoolingError> {
    let tensors: HashMap<String, Tensor> = tensors.iter().map(|(name, tensor)| (name.to_string(), (*tensor).clone())).collect();
    candle_core::safetensors::save(&tensors, path)?;
    Ok(())
}

/// Hashes the values of f32 tensors in order (SHA-256, hex).
pub fn values_checksum(tensors: &[&Tensor]) -> Result<String, PoolingError> {
    let mut hasher = Sha256::new();
    for tensor in tensors {
        for value in tensor.flatten_all()?.to_vec1::<f32>()? {
            hasher.update(value.to_le_bytes());
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Averages token states over real tokens: (batch, n, d) and (batch, n) to (batch, d).
pub fn masked_mean(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let summed = hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
    let counts = mask.sum_keepdim(1)?.clamp(1.0, f64::INFINITY)?;
    summed.broadcast_div(&counts)
}

/// Softmax over the last axis that gives padded positions exactly zero weight.
pub fn masked_softmax(scores: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    // Padded positions get a score far below any real one and are zeroed after exp() rather
    // than set to -inf, so a row never becomes NaN; subtracting the row maximum keeps exp()
    // finite.
    let masked = scores.broadcast_add(&((mask.ones_like()? - mask)? * -1e9)?)?;
    let max = masked.max_keepdim(1)?;
    let exps = masked.broadcast_sub(&max)?.exp()?.broadcast_mul(mask)?;
    let totals = exps.sum_keepdim(1)?.clamp(f64::MIN_POSITIVE, f64::INFINITY)?;
    exps.broadcast_div(&totals)
}

/// Scales rows to unit length; an all-zero row stays zero instead of becoming NaN.
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norms = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(NORM_EPSILON, f64::INFINITY)?;
    x.broadcast_div(&norms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(hidden: Vec<f32>, mask: Vec<f32>, batch: usize, n: usize, d: usize) -> TokenStates {
        TokenStates {
            hidden: Tensor::from_vec(hidden, (batch, n, d), &Device::Cpu).unwrap(),
            mask: Tensor::from_vec(mask, (batch, n), &Device::Cpu).unwrap(),
        }
    }

    fn random_states() -> TokenStates {
        let (batch, n, d) = (3, 5, 8);
        let hidden: Vec<f32> = (0..batch * n * d).map(|i| ((i * 7919 % 97) as f32 / 48.5) - 1.0).collect();
        let mask = vec![1., 1., 1., 1., 1., 1., 1., 1., 0., 0., 1., 0., 0., 0., 0.];
        states(hidden, mask, batch, n, d)
    }

    #[test]
    fn untrained_head_equals_mean_pooling() {
        let states = random_states();
        let head = AttentionHead::untrained(8, &Device::Cpu).unwrap();
        let expected = l2_normalize(&masked_mean(&states.hidden, &states.mask).unwrap()).unwrap();

        let queries = head.pool_queries(&states).unwrap().vectors;
        let items = head.pool_items(&states).unwrap();
        let query_gap = (queries - &expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let item_gap = (items - &expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(query_gap < 1e-6, "query pooling differs from mean pooling by {query_gap}");
        assert_eq!(item_gap, 0.0, "item pooling differs from mean pooling");
    }

    #[test]
    fn attention_ignores_padding_and_sums_to_one() {
        let states = random_states();
        let mut head = AttentionHead::untrained(8, &Device::Cpu).unwrap();
        head.w_attn = (Tensor::eye(8, DType::F32, &Device::Cpu).unwrap() * 3.0).unwrap();
        let attention = head.pool_queries(&states).unwrap().attention.to_vec2::<f32>().unwrap();

        for row in &attention {
            let total: f32 = row.iter().sum();
            assert!((total - 1.0).abs() < 1e-5, "row sums to {total}");
        }
        assert_eq!(&attention[1][3..], &[0.0, 0.0]);
        assert_eq!(attention[2][0], 1.0);
    }

    #[test]
    fn padding_does_not_change_pooled_vector() {
        let d = 4;
        let short = states(vec![1., 2., 3., 4., 0., 1., 0., 1.], vec![1., 1.], 1, 2, d);
        let padded = states(vec![1., 2., 3., 4., 0., 1., 0., 1., 9., 9., 9., 9.], vec![1., 1., 0.], 1, 3, d);
        let mut head = AttentionHead::untrained(d, &Device::Cpu).unwrap();
        head.w_attn = Tensor::eye(d, DType::F32, &Device::Cpu).unwrap();

        let a = head.pool_queries(&short).unwrap().vectors.to_vec2::<f32>().unwrap();
        let b = head.pool_queries(&padded).unwrap().vectors.to_vec2::<f32>().unwrap();
        for (x, y) in a[0].iter().zip(&b[0]) {
            assert!((x - y).abs() < 1e-6);
        }
    }

    #[test]
    fn zero_vector_normalizes_to_zero() {
        let zero = Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap();
        let normalized = l2_normalize(&zero).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(normalized[0], vec![0.0; 4]);
    }

    #[test]
    fn save_and_load_keep_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("head.safetensors");
        let mut head = AttentionHead::untrained(6, &Device::Cpu).unwrap();
        head.w_attn = (Tensor::eye(6, DType::F32, &Device::Cpu).unwrap() * 0.5).unwrap();
        head.save(&path).unwrap();

        let loaded = AttentionHead::load(&path, 6, &Device::Cpu).unwrap();
        assert_eq!(loaded.checksum().unwrap(), head.checksum().unwrap());
        assert_ne!(loaded.checksum().unwrap(), AttentionHead::untrained(6, &Device::Cpu).unwrap().checksum().unwrap());
    }

    #[test]
    fn load_rejects_head_of_other_width() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("head.safetensors");
        AttentionHead::untrained(6, &Device::Cpu).unwrap().save(&path).unwrap();
        let err = AttentionHead::load(&path, 8, &Device::Cpu).err().unwrap();
        assert!(matches!(err, PoolingError::WrongShape { dim: 8, .. }), "{err}");
    }
}
