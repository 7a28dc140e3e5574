//! The BERT-family encoder: model files, tokenization and the forward pass that turns a batch of
//! token ids into contextual token states.

mod device;
mod model;
mod normalize;
mod q4file;
mod source;
mod tokenize;

use std::path::PathBuf;

pub use device::select_device;
pub use model::{Encoder, TokenStates};
pub use normalize::normalize_text;
pub use source::{ModelFiles, ModelSource, ModelWeights, E5_Q4_FILE};
pub use tokenize::{TextKind, TextPrefixes, TextTokenizer, TokenizedText};

/// Errors of the encoder layer. All of them are the service's fault (bad model files or a
/// failed tensor operation), except `Tokenize`, which is raised for text the tokenizer rejects.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("model file {path} not found")]
    MissingFile { path: PathBuf },
    #[error("model {source_name} not found: {hint}")]
    ModelNotFound { source_name: String, hint: String },
    #[error("failed to download model {source_name} from the Hugging Face Hub: {message}")]
    Download { source_name: String, message: String },
    #[error("invalid model config {path}: {message}")]
    InvalidConfig { path: PathBuf, message: String },
    /// A weights file that is truncated, of another format, or inconsistent with its header.
    #[error("invalid weights file {path}: {message}")]
    InvalidWeights { path: PathBuf, message: String },
    #[error("failed to load tokenizer {path}: {message}")]
    TokenizerLoad { path: PathBuf, message: String },
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    #[error("CUDA was requested but {0}")]
    CudaUnavailable(String),
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("failed to read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}
