//! The header of an `e5-small-q4.bin` file: magic, version, model dimensions and the engine's
//! vocabulary, which is skipped. Also the list of tensors the header implies, and the cursor
//! that reads the file.

use candle_transformers::models::bert::{Config as BertConfig, HiddenAct, PositionEmbeddingType};

use super::BLOCK_WEIGHTS;

pub(super) const MAGIC: &[u8; 4] = b"E5S1";
const SUPPORTED_VERSION: u32 = 1;

/// Model dimensions (each validated to be positive), layer-norm epsilon and `<pad>` id from
/// the file header.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Header {
    pub(super) hidden: usize,
    pub(super) layers: usize,
    pub(super) heads: usize,
    pub(super) intermediate: usize,
    pub(super) vocab: usize,
    pub(super) positions: usize,
    pub(super) token_types: usize,
    pub(super) layer_norm_eps: f32,
    pub(super) pad_id: usize,
}

impl Header {
    pub(super) fn read(reader: &mut Reader) -> Result<Self, String> {
        let magic = reader.array::<4>("the magic number")?;
        if &magic != MAGIC {
            return Err(format!(
                "not an e5-small-q4 file: it starts with \"{}\", expected the magic bytes \"E5S1\"",
                magic.escape_ascii()
            ));
        }
        let version = reader.u32("the version")?;
        if version != SUPPORTED_VERSION {
            return Err(format!("unsupported version {version}; this reader supports version {SUPPORTED_VERSION}"));
        }

        let hidden = reader.positive("the hidden size")?;
        let layers = reader.positive("the layer count")?;
        let heads = reader.positive("the attention head count")?;
        let intermediate = reader.positive("the intermediate size")?;
        let vocab = reader.positive("the vocabulary size")?;
        let positions = reader.positive("the position count")?;
        let token_types = reader.positive("the token type count")?;
        let layer_norm_eps = reader.f32("the layer-norm epsilon")?;
        let block = reader.i32("the quantization block length")?;
        if hidden % heads != 0 {
            return Err(format!("the hidden size {hidden} is not divisible by the {heads} attention heads"));
        }
        if !(layer_norm_eps.is_finite() && layer_norm_eps > 0.0) {
            return Err(format!("the layer-norm epsilon is {layer_norm_eps}, expected a small positive number"));
        }
        if block != BLOCK_WEIGHTS as i32 {
            return Err(format!("the quantization block length is {block}; this reader supports {BLOCK_WEIGHTS}"));
        }

        let pad_id = skip_vocabulary(reader)?;
        Ok(Self { hidden, layers, heads, intermediate, vocab, positions, token_types, layer_norm_eps, pad_id })
    }

    pub(super) fn bert_config(&self) -> BertConfig {
        BertConfig {
            vocab_size: self.vocab,
            hidden_size: self.hidden,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            intermediate_size: self.intermediate,
            // The exact (erf) GELU, which is what the package's engine computes.
            hidden_act: HiddenAct::Gelu,
            hidden_dropout_prob: 0.0,
            max_position_embeddings: self.positions,
            type_vocab_size: self.token_types,
            initializer_range: 0.02,
            layer_norm_eps: f64::from(self.layer_norm_eps),
            pad_token_id: self.pad_id,
            position_embedding_type: PositionEmbeddingType::Absolute,
            use_cache: false,
            classifier_dropout: None,
            model_type: Some("bert".into()),
        }
    }

    /// Lists the tensors a file with this header must contain, in the file's naming.
    pub(super) fn tensor_specs(&self) -> Vec<TensorSpec> {
        let (hidden, intermediate) = (self.hidden, self.intermediate);
        let mut specs = vec![
            TensorSpec::new("emb.word".into(), "embeddings.word_embeddings.weight", vec![self.vocab, hidden]),
            TensorSpec::new("emb.pos".into(), "embeddings.position_embeddings.weight", vec![self.positions, hidden]),
            TensorSpec::new("emb.type".into(), "embeddings.token_type_embeddings.weight", vec![self.token_types, hidden]),
            TensorSpec::new("emb.ln.w".into(), "embeddings.LayerNorm.weight", vec![hidden]),
            TensorSpec::new("emb.ln.b".into(), "embeddings.LayerNorm.bias", vec![hidden]),
        ];
        // File abbreviation, BertModel module, output size, and input size (None for a LayerNorm).
        // Linear weights are stored row-major as [output, input], which is what candle expects.
        let modules = [
            ("q", "attention.self.query", hidden, Some(hidden)),
            ("k", "attention.self.key", hidden, Some(hidden)),
            ("v", "attention.self.value", hidden, Some(hidden)),
            ("ao", "attention.output.dense", hidden, Some(hidden)),
            ("aln", "attention.output.LayerNorm", hidden, None),
            ("fi", "intermediate.dense", intermediate, Some(hidden)),
            ("fo", "output.dense", hidden, Some(intermediate)),
            ("oln", "output.LayerNorm", hidden, None),
        ];
        for layer in 0..self.layers {
            for (short, module, output, input) in modules {
                let weight_shape = match input {
                    Some(input) => vec![output, input],
                    None => vec![output],
                };
                let prefix = format!("encoder.layer.{layer}.{module}");
                specs.push(TensorSpec::new(format!("l{layer}.{short}.w"), &format!("{prefix}.weight"), weight_shape));
                specs.push(TensorSpec::new(format!("l{layer}.{short}.b"), &format!("{prefix}.bias"), vec![output]));
            }
        }
        specs
    }
}

/// Skips the engine's SentencePiece vocabulary and returns the id of its `<pad>` token.
fn skip_vocabulary(reader: &mut Reader) -> Result<usize, String> {
    let pieces = reader.non_negative("the tokenizer piece count")?;
    let _start_id = reader.i32("the <s> id")?;
    let _end_id = reader.i32("the </s> id")?;
    let pad_id = reader.non_negative("the <pad> id")?;
    let _unknown_id = reader.i32("the <unk> id")?;
    let blob_length = reader.u64("the tokenizer blob length")?;
    // `pieces` came from an i32, so these products cannot overflow a u64.
    let tables = (pieces as u64 + 1) * 4 + pieces as u64 * 4;
    let vocabulary = tables.checked_add(blob_length).ok_or("the tokenizer blob length overflows")?;
    reader.skip(vocabulary, "the tokenizer vocabulary")?;

    let _normalization_entries = reader.i32("the normalization entry count")?;
    let normalization_bytes = reader.u32("the normalization map length")?;
    reader.skip(u64::from(normalization_bytes), "the normalization map")?;
    Ok(pad_id)
}

/// A tensor that a file must contain: its name there, its name for `BertModel` and its shape.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TensorSpec {
    pub(super) file_name: String,
    pub(super) bert_name: String,
    pub(super) shape: Vec<usize>,
}

impl TensorSpec {
    fn new(file_name: String, bert_name: &str, shape: Vec<usize>) -> Self {
        Self { file_name, bert_name: bert_name.to_string(), shape }
    }

    pub(super) fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A cursor over the file that reports reads past the end as a truncated file.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pub(super) position: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    pub(super) fn take(&mut self, length: usize, field: &str) -> Result<&'a [u8], String> {
        let end = self.position.checked_add(length).filter(|&end| end <= self.bytes.len()).ok_or_else(|| {
            format!(
                "truncated file: {field} needs {length} bytes at byte {} but the file has {} bytes",
                self.position,
                self.bytes.len()
            )
        })?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    pub(super) fn skip(&mut self, length: u64, field: &str) -> Result<(), String> {
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        self.take(length, field).map(|_| ())
    }

    pub(super) fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], String> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N, field)?);
        Ok(array)
    }

    pub(super) fn u8(&mut self, field: &str) -> Result<u8, String> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(super) fn u16(&mut self, field: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(super) fn u32(&mut self, field: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(super) fn u64(&mut self, field: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub(super) fn i32(&mut self, field: &str) -> Result<i32, String> {
        Ok(i32::from_le_bytes(self.array(field)?))
    }

    pub(super) fn f32(&mut self, field: &str) -> Result<f32, String> {
        Ok(f32::from_le_bytes(self.array(field)?))
    }

    pub(super) fn positive(&mut self, field: &str) -> Result<usize, String> {
        match self.i32(field)? {
            value if value > 0 => Ok(value as usize),
            value => Err(format!("{field} is {value}, expected a positive number")),
        }
    }

    pub(super) fn non_negative(&mut self, field: &str) -> Result<usize, String> {
        match self.i32(field)? {
            value if value >= 0 => Ok(value as usize),
            value => Err(format!("{field} is {value}, expected zero or more")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_file::{parse_error, TestFile};

    #[test]
    fn bad_magic_is_rejected() {
        let mut file = TestFile::tiny(1);
        file.magic = *b"PK\x03\x04";
        let message = parse_error(&file);
        assert!(message.contains("not an e5-small-q4 file"), "{message}");
        assert!(message.contains("PK\\x03\\x04"), "{message}");
    }

    #[test]
    fn invalid_header_values_are_rejected() {
        let cases: [(&str, fn(&mut TestFile)); 5] = [
            ("unsupported version 2", |file| file.version = 2),
            ("the layer count is -1, expected a positive number", |file| file.dims[1] = -1),
            ("the hidden size 32 is not divisible by the 5 attention heads", |file| file.dims[2] = 5),
            ("the layer-norm epsilon is NaN", |file| file.layer_norm_eps = f32::NAN),
            ("the quantization block length is 64", |file| file.block = 64),
        ];
        for (expected, change) in cases {
            let mut file = TestFile::tiny(1);
            change(&mut file);
            let message = parse_error(&file);
            assert!(message.contains(expected), "expected \"{expected}\" in: {message}");
        }
    }
}
