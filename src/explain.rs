//! Turns per-token attention into per-word weights that a person can read.

use serde::Serialize;

use crate::encoder::TokenizedText;

/// One word of the query and the share of attention it received.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WordWeight {
    /// The word as it appears in the query.
    #[schema(example = "hobbit")]
    pub text: String,
    /// Share of the attention over the query's words, between 0 and 1.
    #[schema(example = 0.31)]
    pub weight: f32,
}

/// Merges word pieces back into the words of the query and sums their attention.
///
/// Special tokens ([CLS], [SEP]) take part in pooling but are not words, so their share is
/// left out and the word weights are rescaled to sum to 1. `attention` contains one weight per
/// token of `text` (padding already cut off).
pub fn word_weights(text: &TokenizedText, attention: &[f32]) -> Vec<WordWeight> {
    let mut words: Vec<(u32, usize, usize, f32)> = Vec::new();
    for (token, weight) in attention.iter().enumerate().take(text.len()) {
        let Some(word) = text.word_ids[token] else { continue };
        let (start, end) = text.offsets[token];
        match words.last_mut() {
            Some(last) if last.0 == word => {
                last.2 = last.2.max(end);
                last.3 += weight;
            }
            _ => words.push((word, start, end, *weight)),
        }
    }

    let total: f32 = words.iter().map(|word| word.3).sum();
    words
        .into_iter()
        .map(|(_, start, end, weight)| WordWeight {
            text: text.text.get(start..end).unwrap_or_default().to_string(),
            weight: if total > 0.0 { weight / total } else { 0.0 },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenized() -> TokenizedText {
        // "red kettles" as [CLS] red kettle ##s [SEP]
        TokenizedText {
            ids: vec![101, 1, 2, 3, 102],
            word_ids: vec![None, Some(0), Some(1), Some(1), None],
            offsets: vec![(0, 0), (0, 3), (4, 10), (10, 11), (0, 0)],
            text: "red kettles".into(),
            truncated: false,
        }
    }

    #[test]
    fn pieces_merge_into_words() {
        let weights = word_weights(&tokenized(), &[0.2, 0.1, 0.3, 0.2, 0.2]);
        assert_eq!(weights.len(), 2);
        assert_eq!(weights[0].text, "red");
        assert_eq!(weights[1].text, "kettles");
        assert!((weights[0].weight - 1.0 / 6.0).abs() < 1e-6);
        assert!((weights[1].weight - 5.0 / 6.0).abs() < 1e-6);
    }

    #[test]
    fn word_weights_sum_to_one() {
        let weights = word_weights(&tokenized(), &[0.5, 0.1, 0.1, 0.1, 0.2]);
        let total: f32 = weights.iter().map(|word| word.weight).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    #[test]
    fn zero_attention_gives_zero_weights() {
        let weights = word_weights(&tokenized(), &[1.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(weights.iter().all(|word| word.weight == 0.0));
    }
}
