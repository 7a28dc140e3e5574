//! Frozen-encoder features for training, computed once and cached on disk: the padded token
//! states of every judged query and the mean token state of every catalogue item.
//!
//! Only the head is trained, so an epoch costs a few small matrix products instead of
//! forward passes through the encoder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::encoder::{Encoder, TextKind, TokenizedText};
use crate::pooling::masked_mean;
use crate::service::ServiceError;

/// Texts per forward pass while computing features.
const BATCH: usize = 64;

pub struct QueryFeatures {
    /// (queries, longest query, hidden), stored as f16.
    pub states: Tensor,
    /// (queries, longest query) in f32.
    pub mask: Tensor,
}

pub struct ItemFeatures {
    /// (items, hidden) in f32: the mean of each item's token states.
    pub means: Tensor,
    /// (items, hidden) in f32: each item's first ([CLS]) token state, for the CLS baseline.
    pub cls: Tensor,
}

/// Names a cache file after everything that determines its content.
pub fn cache_key(model_fingerprint: &str, max_tokens: usize, texts: &[String]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(model_fingerprint.as_bytes());
    hasher.update(max_tokens.to_le_bytes());
    for text in texts {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    hex::encode(&hasher.finalize()[..12])
}

fn progress(total: usize, noun: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!("encoding {noun} {{pos}}/{{len}} [{{bar:40}}] eta {{eta}}")).expect("valid template"),
    );
    bar
}

fn load_cached(path: &Path, device: &Device) -> Option<HashMap<String, Tensor>> {
    let tensors = candle_core::safetensors::load(path, device).ok()?;
    tracing::info!(cache = %path.display(), "features read from cache");
    Some(tensors)
}

fn save_cache(path: &Path, tensors: HashMap<String, Tensor>) {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let partial = path.with_extension("partial");
    match candle_core::safetensors::save(&tensors, &partial).and_then(|_| std::fs::rename(&partial, path).map_err(candle_core::Error::from)) {
        Ok(()) => tracing::info!(cache = %path.display(), "features cached"),
        Err(err) => tracing::warn!(cache = %path.display(), error = %err, "failed to write the feature cache; continuing without it"),
    }
}

/// Returns the token states of `queries`, from `cache_dir` when present.
pub fn query_features(encoder: &Encoder, queries: &[String], cache_dir: &Path, fingerprint: &str) -> Result<QueryFeatures, ServiceError> {
    let path: PathBuf = cache_dir.join(format!("queries-{}.safetensors", cache_key(fingerprint, encoder.tokenizer().max_tokens(), queries)));
    if let Some(mut cached) = load_cached(&path, encoder.device()) {
        if let (Some(states), Some(mask)) = (cached.remove("states"), cached.remove("mask")) {
            return Ok(QueryFeatures { states, mask });
        }
    }

    let tokenized: Vec<TokenizedText> = encoder.tokenizer().tokenize_all(queries, TextKind::Query)?;
    let longest = tokenized.iter().map(TokenizedText::len).max().unwrap_or(1);
    let bar = progress(queries.len(), "queries");
    let mut state_rows = Vec::with_capacity(queries.len().div_ceil(BATCH));
    let mut mask_rows = Vec::with_capacity(queries.len().div_ceil(BATCH));
    for chunk in tokenized.chunks(BATCH) {
        let batch: Vec<&TokenizedText> = chunk.iter().collect();
        let output = encoder.forward(&batch)?;
        // Pad every batch to the longest query overall so batches stack into one tensor.
        let width = output.hidden.dim(1)?;
        let states = output.hidden.pad_with_zeros(1, 0, longest - width)?;
        let mask = output.mask.pad_with_zeros(1, 0, longest - width)?;
        state_rows.push(states.to_dtype(DType::F16)?);
        mask_rows.push(mask);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();

    let features = QueryFeatures { states: Tensor::cat(&state_rows, 0)?, mask: Tensor::cat(&mask_rows, 0)? };
    save_cache(&path, [("states".to_string(), features.states.clone()), ("mask".to_string(), features.mask.clone())].into());
    Ok(features)
}

/// Returns the mean and the first token state of each item text, from `cache_dir` when present. Texts are
/// encoded in order of length so that batches carry little padding.
pub fn item_features(encoder: &Encoder, texts: &[String], cache_dir: &Path, fingerprint: &str) -> Result<ItemFeatures, ServiceError> {
    let path = cache_dir.join(format!("items-{}.safetensors", cache_key(fingerprint, encoder.tokenizer().max_tokens(), texts)));
    if let Some(mut cached) = load_cached(&path, encoder.device()) {
        if let (Some(means), Some(cls)) = (cached.remove("means"), cached.remove("cls")) {
            return Ok(ItemFeatures { means, cls });
        }
    }

    let tokenized: Vec<TokenizedText> = encoder.tokenizer().tokenize_all(texts, TextKind::Item)?;
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&position| tokenized[position].len());
    let hidden = encoder.hidden_size();
    let mut means = vec![0f32; texts.len() * hidden];
    let mut cls = vec![0f32; texts.len() * hidden];
    let bar = progress(texts.len(), "items");
    for chunk in order.chunks(BATCH) {
        let batch: Vec<&TokenizedText> = chunk.iter().map(|&position| &tokenized[position]).collect();
        let output = encoder.forward(&batch)?;
        let rows = masked_mean(&output.hidden, &output.mask)?.to_vec2::<f32>()?;
        let first = output.hidden.narrow(1, 0, 1)?.squeeze(1)?.to_vec2::<f32>()?;
        for ((&position, row), first) in chunk.iter().zip(rows).zip(first) {
            means[position * hidden..(position + 1) * hidden].copy_from_slice(&row);
            cls[position * hidden..(position + 1) * hidden].copy_from_slice(&first);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();

    let features = ItemFeatures {
        means: Tensor::from_vec(means, (texts.len(), hidden), encoder.device())?,
        cls: Tensor::from_vec(cls, (texts.len(), hidden), encoder.device())?,
    };
    save_cache(&path, [("means".to_string(), features.means.clone()), ("cls".to_string(), features.cls.clone())].into());
    Ok(features)
}
