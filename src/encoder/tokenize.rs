//! Tokenization with the model's own `tokenizer.json`, with its built-in padding switched off
//! (batches are padded to their longest text instead) and truncation at a configured length.
//! Texts are normalised first, and get the model's query or passage prefix.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::normalize::normalize_text;
use super::EncoderError;

/// Whether a text is a query or an item, which decides its prefix and how it is pooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Query,
    Item,
}

/// Text put before queries and passages, for models trained with them (e5: "query: ",
/// "passage: ").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextPrefixes {
    pub query: String,
    pub passage: String,
}

/// One text as token ids, with what an explanation needs to map tokens back to words.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedText {
    /// Token ids including the special tokens ([CLS] ... [SEP]).
    pub ids: Vec<u32>,
    /// For each token, the index of the word it came from; `None` for special tokens.
    pub word_ids: Vec<Option<u32>>,
    /// For each token, its byte range in `text`.
    pub offsets: Vec<(usize, usize)>,
    /// The text the tokens came from: the prefix, then the normalised input.
    pub text: String,
    /// Bytes of `text` that belong to the prefix; explanations leave them out.
    pub prefix_len: usize,
    /// True when tokens past the maximum length were dropped.
    pub truncated: bool,
}

impl TokenizedText {
    /// Number of tokens, special tokens included.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A tokenizer that is safe to share between threads (`tokenizers::Tokenizer` is `Sync`).
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_tokens: usize,
    prefixes: TextPrefixes,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and truncates every text to `max_tokens` tokens.
    pub fn from_file(path: &Path, max_tokens: usize) -> Result<Self, EncoderError> {
        let load_error = |message: String| EncoderError::TokenizerLoad { path: path.to_path_buf(), message };
        let mut inner = Tokenizer::from_file(path).map_err(|err| load_error(err.to_string()))?;

        // The packaged MiniLM tokenizer pads every text to 128 tokens; padding happens per
        // batch in the encoder instead, so short queries stay short.
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|err| load_error(err.to_string()))?;
        Ok(Self { inner, max_tokens, prefixes: TextPrefixes::default() })
    }

    /// Sets the prefixes put before queries and passages.
    pub fn with_prefixes(mut self, prefixes: TextPrefixes) -> Self {
        self.prefixes = prefixes;
        self
    }

    pub fn prefixes(&self) -> &TextPrefixes {
        &self.prefixes
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Normalises one text, puts the prefix for its kind before it and tokenizes it with the
    /// model's special tokens.
    pub fn tokenize(&self, text: &str, kind: TextKind) -> Result<TokenizedText, EncoderError> {
        let prefix = match kind {
            TextKind::Query => &self.prefixes.query,
            TextKind::Item => &self.prefixes.passage,
        };
        let text = format!("{prefix}{}", normalize_text(text));
        let encoding = self.inner.encode(text.as_str(), true).map_err(|err| EncoderError::Tokenize(err.to_string()))?;
        Ok(TokenizedText {
            ids: encoding.get_ids().to_vec(),
            word_ids: encoding.get_word_ids().to_vec(),
            offsets: encoding.get_offsets().to_vec(),
            prefix_len: prefix.len(),
            text,
            truncated: !encoding.get_overflowing().is_empty(),
        })
    }

    /// Tokenizes texts of one kind on the calling thread, one after the other.
    pub fn tokenize_all<S: AsRef<str>>(&self, texts: &[S], kind: TextKind) -> Result<Vec<TokenizedText>, EncoderError> {
        texts.iter().map(|text| self.tokenize(text.as_ref(), kind)).collect()
    }

    /// Returns the id used to pad batches: the tokenizer's `[PAD]` token, or 0 when it has none.
    pub fn pad_id(&self) -> u32 {
        self.inner.token_to_id("[PAD]").or_else(|| self.inner.token_to_id("<pad>")).unwrap_or(0)
    }
}
