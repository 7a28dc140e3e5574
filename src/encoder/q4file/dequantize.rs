//! Conversion of validated tensor data to f32: little-endian f32 words are decoded and Q4_0
//! blocks are dequantized.

use half::f16;
use rayon::prelude::*;

use super::{BLOCK_BYTES, BLOCK_WEIGHTS, DTYPE_F32};

/// Weights one rayon task converts; a multiple of the block length.
const CHUNK_WEIGHTS: usize = 64 * BLOCK_WEIGHTS;

/// Converts a validated tensor's data to f32 values. Large tensors are split into chunks that
/// rayon converts in parallel: the word embeddings alone contain about 82% of the weights of
/// multilingual-e5-small, so parallelising over tensors would leave the other cores mostly idle.
pub(super) fn dequantize(dtype: u8, data: &[u8], elements: usize) -> Vec<f32> {
    let mut values = vec![0.0f32; elements];
    if dtype == DTYPE_F32 {
        values
            .par_chunks_mut(CHUNK_WEIGHTS)
            .zip(data.par_chunks(CHUNK_WEIGHTS * 4))
            .for_each(|(values, data)| decode_f32(data, values));
    } else {
        values
            .par_chunks_mut(CHUNK_WEIGHTS)
            .zip(data.par_chunks(CHUNK_WEIGHTS / BLOCK_WEIGHTS * BLOCK_BYTES))
            .for_each(|(values, data)| dequantize_q4_0(data, values));
    }
    values
}

fn decode_f32(data: &[u8], values: &mut [f32]) {
    let (words, _) = data.as_chunks::<4>();
    for (value, word) in values.iter_mut().zip(words) {
        *value = f32::from_le_bytes(*word);
    }
}

/// Dequantizes whole Q4_0 blocks, writing 32 weights to `values` for each 18 bytes of `data`.
pub(super) fn dequantize_q4_0(data: &[u8], values: &mut [f32]) {
    let (blocks, _) = data.as_chunks::<BLOCK_BYTES>();
    let (outputs, _) = values.as_chunks_mut::<BLOCK_WEIGHTS>();
    for (block, output) in blocks.iter().zip(outputs) {
        let scale = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let (low, high) = output.split_at_mut(BLOCK_WEIGHTS / 2);
        for ((&byte, low), high) in block[2..].iter().zip(low).zip(high) {
            *low = f32::from(i16::from(byte & 0x0F) - 8) * scale;
            *high = f32::from(i16::from(byte >> 4) - 8) * scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_block_nibble_order() {
        // Scale 0.5; byte j stores j in its low nibble and 15 - j in its high nibble.
        let mut block = f16::from_f32(0.5).to_le_bytes().to_vec();
        block.extend((0u8..16).map(|j| j | ((15 - j) << 4)));
        let mut values = [0.0f32; 32];
        dequantize_q4_0(&block, &mut values);
        for j in 0..16 {
            assert_eq!(values[j], (j as f32 - 8.0) * 0.5, "weight {j} (low nibble of byte {j})");
            assert_eq!(values[j + 16], (7.0 - j as f32) * 0.5, "weight {} (high nibble of byte {j})", j + 16);
        }
    }
}
