//! The forward pass: padded batches of token ids in, token states and their mask out.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};

use super::device::device_label;
use super::{q4file, EncoderError, ModelFiles, ModelWeights, TextTokenizer, TokenizedText};

/// Contextual token states of a padded batch.
pub struct TokenStates {
    /// (batch, longest text, hidden) in f32.
    pub hidden: Tensor,
    /// (batch, longest text) in f32: 1 for a real token, 0 for padding.
    pub mask: Tensor,
}

/// A BERT encoder and its tokenizer on one device.
pub struct Encoder {
    model: BertModel,
    tokenizer: Arc<TextTokenizer>,
    device: Device,
    hidden_size: usize,
    pad_id: u32,
}

impl Encoder {
    /// Loads the model weights (f32) and tokenizer. `max_tokens` may not exceed the model's
    /// position embeddings.
    pub fn load(files: &ModelFiles, max_tokens: usize, device: Device) -> Result<Self, EncoderError> {
        Self::load_with_dtype(files, max_tokens, device, DType::F32)
    }

    /// Loads the model with its weights and activations in `dtype` (f32, f16 or bf16). Token
    /// states are always returned in f32. A 4-bit `e5-small-q4.bin` is dequantized to f32 first.
    pub fn load_with_dtype(files: &ModelFiles, max_tokens: usize, device: Device, dtype: DType) -> Result<Self, EncoderError> {
        let (config, vb) = match &files.weights {
            ModelWeights::Safetensors { config, weights } => {
                let config = read_config(config, max_tokens)?;
                // SAFETY: the weights file is memory-mapped read-only and is not modified while loaded.
                let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], dtype, &device)? };
                (config, vb)
            }
            ModelWeights::E5Q4 { path } => {
                let model = q4file::load(path)?;
                check_positions(&model.config, max_tokens, path)?;
                (model.config, VarBuilder::from_tensors(model.tensors, dtype, &device))
            }
        };

        let tokenizer = Arc::new(TextTokenizer::from_file(&files.tokenizer, max_tokens)?);
        let model = BertModel::load(vb, &config)?;
        let pad_id = tokenizer.pad_id();
        tracing::info!(model = %files.name, device = %device_label(&device), hidden = config.hidden_size,
            layers = config.num_hidden_layers, max_tokens, "encoder loaded");
        Ok(Self { model, tokenizer, device, hidden_size: config.hidden_size, pad_id })
    }

    /// Sets the prefixes that queries and item texts get before tokenization.
    pub fn with_prefixes(mut self, prefixes: super::TextPrefixes) -> Self {
        let tokenizer = Arc::try_unwrap(self.tokenizer).unwrap_or_else(|shared| (*shared).clone());
        self.tokenizer = Arc::new(tokenizer.with_prefixes(prefixes));
        self
    }

    /// Returns the tokenizer, shared so that tokenization can run on other threads.
    pub fn tokenizer(&self) -> &Arc<TextTokenizer> {
        &self.tokenizer
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn device_label(&self) -> String {
        device_label(&self.device)
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// Runs the model over texts padded to the longest one. The attention mask is always
    /// applied, so a text's states do not depend on what else is in the batch.
    pub fn forward(&self, texts: &[&TokenizedText]) -> Result<TokenStates, EncoderError> {
        let batch = texts.len();
        let longest = texts.iter().map(|text| text.len()).max().unwrap_or(0);
        let mut ids = vec![self.pad_id; batch * longest];
        let mut mask = vec![0u32; batch * longest];
        for (row, text) in texts.iter().enumerate() {
            let start = row * longest;
            ids[start..start + text.len()].copy_from_slice(&text.ids);
            mask[start..start + text.len()].fill(1);
        }

        let ids = Tensor::from_vec(ids, (batch, longest), &self.device)?;
        let mask = Tensor::from_vec(mask, (batch, longest), &self.device)?;
        let token_types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &token_types, Some(&mask))?.to_dtype(DType::F32)?;
        Ok(TokenStates { hidden, mask: mask.to_dtype(DType::F32)? })
    }
}

/// Reads a Hugging Face `config.json` and checks it has positions for `max_tokens` tokens.
fn read_config(path: &Path, max_tokens: usize) -> Result<BertConfig, EncoderError> {
    let text = std::fs::read_to_string(path).map_err(|source| EncoderError::Io { path: path.to_path_buf(), source })?;
    let config: BertConfig = serde_json::from_str(&text)
        .map_err(|err| EncoderError::InvalidConfig { path: path.to_path_buf(), message: err.to_string() })?;
    check_positions(&config, max_tokens, path)?;
    Ok(config)
}

/// Fails when `max_tokens` exceeds the model's position embeddings; `path` is the file the
/// config came from.
fn check_positions(config: &BertConfig, max_tokens: usize, path: &Path) -> Result<(), EncoderError> {
    if max_tokens > config.max_position_embeddings {
        return Err(EncoderError::InvalidConfig {
            path: path.to_path_buf(),
            message: format!(
                "model.max_tokens is {max_tokens} but the model has only {} positions; lower model.max_tokens",
                config.max_position_embeddings
            ),
        });
    }
    Ok(())
}
