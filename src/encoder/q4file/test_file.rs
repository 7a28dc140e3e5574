//! Writes files in the `e5-small-q4.bin` layout for the tests, valid or broken on purpose.

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::header::{Header, MAGIC};
use super::{Layout, DTYPE_F32, DTYPE_Q4_0, ENTRY_FIXED_BYTES};

/// Hidden size, layers, heads, intermediate size, vocabulary, positions and token types of
/// the tiny test files.
pub(super) const TINY_DIMS: [i32; 7] = [32, 2, 4, 64, 50, 16, 2];

pub(super) struct TestTensor {
    pub(super) name: String,
    pub(super) dtype: u8,
    pub(super) elements: u32,
    pub(super) data: Vec<u8>,
    /// Offset written in the directory instead of where the data really is.
    pub(super) offset_override: Option<u64>,
}

/// A file to write in the `e5-small-q4.bin` layout; tests change fields to make it invalid.
pub(super) struct TestFile {
    pub(super) magic: [u8; 4],
    pub(super) version: u32,
    pub(super) dims: [i32; 7],
    pub(super) layer_norm_eps: f32,
    pub(super) block: i32,
    pub(super) tensors: Vec<TestTensor>,
}

pub(super) fn header_for(dims: [i32; 7]) -> Header {
    let [hidden, layers, heads, intermediate, vocab, positions, token_types] = dims.map(|value| value as usize);
    Header { hidden, layers, heads, intermediate, vocab, positions, token_types, layer_norm_eps: 1e-12, pad_id: 1 }
}

impl TestFile {
    /// Builds a valid file with random weights. Like the real file, it stores the word
    /// embeddings and the linear weights as Q4_0 and everything else as f32.
    pub(super) fn tiny(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let tensors = header_for(TINY_DIMS)
            .tensor_specs()
            .into_iter()
            .map(|spec| {
                let quantized = spec.file_name == "emb.word" || (spec.shape.len() == 2 && spec.file_name.ends_with(".w"));
                let elements = spec.elements();
                let data = if quantized { random_q4_0(&mut rng, elements) } else { random_f32(&mut rng, elements) };
                let dtype = if quantized { DTYPE_Q4_0 } else { DTYPE_F32 };
                TestTensor { name: spec.file_name, dtype, elements: elements as u32, data, offset_override: None }
            })
            .collect();
        Self { magic: *MAGIC, version: 1, dims: TINY_DIMS, layer_norm_eps: 1e-12, block: 32, tensors }
    }

    pub(super) fn tensor(&mut self, name: &str) -> &mut TestTensor {
        self.tensors.iter_mut().find(|tensor| tensor.name == name).expect("tensor in the test file")
    }

    pub(super) fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(self.magic);
        out.extend(self.version.to_le_bytes());
        for value in self.dims {
            out.extend(value.to_le_bytes());
        }
        out.extend(self.layer_norm_eps.to_le_bytes());
        out.extend(self.block.to_le_bytes());

        // A three-piece vocabulary ("a", "b", "c") and a one-entry normalization map.
        out.extend(3i32.to_le_bytes());
        for special_id in [0i32, 2, 1, 3] {
            out.extend(special_id.to_le_bytes());
        }
        out.extend(3u64.to_le_bytes());
        for piece_offset in [0u32, 1, 2, 3] {
            out.extend(piece_offset.to_le_bytes());
        }
        for score in [-1.0f32, -2.0, -3.0] {
            out.extend(score.to_le_bytes());
        }
        out.extend(b"abc");
        out.extend(1i32.to_le_bytes());
        out.extend(9u32.to_le_bytes());
        out.extend([0xA0, 0, 0, 0, 1, 0x20, 0, 0, 0]);

        let directory_length: usize = 4 + self.tensors.iter().map(|tensor| ENTRY_FIXED_BYTES + tensor.name.len()).sum::<usize>();
        let mut offsets = Vec::new();
        let mut next = align(out.len() + directory_length);
        for tensor in &self.tensors {
            offsets.push(next);
            next = align(next + tensor.data.len());
        }
        out.extend((self.tensors.len() as i32).to_le_bytes());
        for (tensor, &offset) in self.tensors.iter().zip(&offsets) {
            out.extend((tensor.name.len() as u16).to_le_bytes());
            out.extend(tensor.name.as_bytes());
            out.push(tensor.dtype);
            out.extend(tensor.elements.to_le_bytes());
            out.extend(tensor.offset_override.unwrap_or(offset as u64).to_le_bytes());
            out.extend((tensor.data.len() as u64).to_le_bytes());
        }
        for (tensor, &offset) in self.tensors.iter().zip(&offsets) {
            out.resize(offset, 0);
            out.extend(&tensor.data);
        }
        out
    }
}

fn align(position: usize) -> usize {
    position.div_ceil(32) * 32
}

pub(super) fn random_f32(rng: &mut StdRng, elements: usize) -> Vec<u8> {
    (0..elements).flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes()).collect()
}

pub(super) fn random_q4_0(rng: &mut StdRng, elements: usize) -> Vec<u8> {
    let mut data = Vec::new();
    for _ in 0..elements / 32 {
        data.extend(f16::from_f32(rng.random_range(0.001f32..0.1)).to_le_bytes());
        data.extend((0..16).map(|_| rng.random::<u8>()));
    }
    data
}

/// Dequantizes a test tensor one weight at a time, independently of `dequantize_q4_0`.
pub(super) fn expected_values(tensor: &TestTensor) -> Vec<f32> {
    if tensor.dtype == DTYPE_F32 {
        return tensor.data.chunks(4).map(|word| f32::from_le_bytes([word[0], word[1], word[2], word[3]])).collect();
    }
    (0..tensor.elements as usize)
        .map(|index| {
            let block = &tensor.data[index / 32 * 18..][..18];
            let scale = f16::from_bits(u16::from(block[0]) | (u16::from(block[1]) << 8)).to_f32();
            let within = index % 32;
            let nibble = if within < 16 { block[2 + within] & 0x0F } else { block[2 + within - 16] >> 4 };
            (f32::from(nibble) - 8.0) * scale
        })
        .collect()
}

pub(super) fn parse_error(file: &TestFile) -> String {
    match Layout::parse(&file.bytes()) {
        Ok(_) => panic!("an invalid file was accepted"),
        Err(message) => message,
    }
}
