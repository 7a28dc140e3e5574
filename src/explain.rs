//! Turns per-token attention into per-word weights that a person can read.
//!
//! Words are what the tokenizer's pre-tokenizer split on (spaces and punctuation), except in
//! text with Chinese characters, which has no spaces: there a dictionary segmenter (jieba)
//! finds the words, so that "我要买一双耐克运动鞋" explains as 我要, 买, 一双, 耐克, 运动鞋.

use serde::Serialize;

use crate::encoder::TokenizedText;
use crate::segment;

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
/// Special tokens ([CLS], [SEP]) and the model's prefix ("query: ") take part in pooling but
/// are not words of the query, so their share is left out and the word weights are rescaled to
/// sum to 1. `attention` contains one weight per token of `text` (padding already cut off).
pub fn word_weights(text: &TokenizedText, attention: &[f32]) -> Vec<WordWeight> {
    let body = &text.text[text.prefix_len..];
    let segments = segment::has_han(body)
        .then(|| segment::words(body).into_iter().map(|(start, end)| (start + text.prefix_len, end + text.prefix_len)).collect::<Vec<_>>());

    // (word key, start byte, end byte, summed attention)
    let mut words: Vec<(usize, usize, usize, f32)> = Vec::new();
    for (token, weight) in attention.iter().enumerate().take(text.len()) {
        let Some(word_id) = text.word_ids[token] else { continue };
        // A SentencePiece token's offsets start at the space before its word. Skipping that
        // space keeps it out of the word, and keeps a first word after the prefix from being
        // taken for part of the prefix.
        let (start, end) = text.offsets[token];
        let start = text.text.get(start..end).map_or(start, |piece| end - piece.trim_start().len());
        if start < text.prefix_len || start >= end {
            continue;
        }
        let (key, start, end) = match &segments {
            Some(segments) => {
                let Some(index) = segments.iter().position(|(from, to)| start >= *from && start < *to) else { continue };
                (index, segments[index].0, segments[index].1)
            }
            None => (word_id as usize, start, end),
        };
        match words.last_mut() {
            Some(last) if last.0 == key => {
                last.2 = last.2.max(end);
                last.3 += weight;
            }
            _ => words.push((key, start, end, *weight)),
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
            prefix_len: 0,
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

    #[test]
    fn prefix_tokens_are_left_out() {
        // "query: red" as [CLS] query : red [SEP]
        let text = TokenizedText {
            ids: vec![101, 7, 8, 1, 102],
            word_ids: vec![None, Some(0), Some(1), Some(2), None],
            offsets: vec![(0, 0), (0, 5), (5, 6), (7, 10), (0, 0)],
            text: "query: red".into(),
            prefix_len: 7,
            truncated: false,
        };
        let weights = word_weights(&text, &[0.1, 0.4, 0.1, 0.3, 0.1]);
        assert_eq!(weights.len(), 1);
        assert_eq!(weights[0].text, "red");
        assert!((weights[0].weight - 1.0).abs() < 1e-6);
    }

    #[test]
    fn sentencepiece_spaces_are_not_words() {
        // "query: I need kettle" as <s> ▁query : ▁I ▁need ▁ke ttle </s>, with each ▁ piece's
        // offsets starting at the space before it, as the e5 tokenizer gives them.
        let text = TokenizedText {
            ids: vec![0, 1, 2, 3, 4, 5, 6, 2],
            word_ids: vec![None, Some(0), Some(0), Some(1), Some(2), Some(3), Some(3), None],
            offsets: vec![(0, 0), (0, 5), (5, 6), (6, 8), (8, 13), (13, 16), (16, 20), (0, 0)],
            text: "query: I need kettle".into(),
            prefix_len: 7,
            truncated: false,
        };
        let words: Vec<String> = word_weights(&text, &[0.1; 8]).into_iter().map(|word| word.text).collect();
        assert_eq!(words, vec!["I", "need", "kettle"]);
    }

    #[test]
    fn chinese_merges_into_dictionary_words() {
        // One token per character, all in one pre-tokenizer word, as SentencePiece gives them.
        let body = "我要买一双耐克运动鞋";
        let text = format!("query: {body}");
        let mut offsets = vec![(0, 0), (0, 6)];
        let mut word_ids = vec![None, Some(0)];
        for (position, c) in body.char_indices() {
            offsets.push((7 + position, 7 + position + c.len_utf8()));
            word_ids.push(Some(1));
        }
        offsets.push((0, 0));
        word_ids.push(None);
        let mut attention = vec![0.0f32; offsets.len()];
        for (token, (start, _)) in offsets.iter().enumerate() {
            let c = text[*start..].chars().next();
            attention[token] = match c {
                Some('耐' | '克') => 0.2,
                Some('运' | '动' | '鞋') => 0.1,
                _ => 0.01,
            };
        }
        let tokenized = TokenizedText { ids: vec![0; offsets.len()], word_ids, offsets, text, prefix_len: 7, truncated: false };
        let weights = word_weights(&tokenized, &attention);
        let words: Vec<&str> = weights.iter().map(|word| word.text.as_str()).collect();
        assert!(words.contains(&"耐克"), "{words:?}");
        assert!(words.contains(&"运动鞋"), "{words:?}");
        let mut ranked = weights.clone();
        ranked.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        assert_eq!((ranked[0].text.as_str(), ranked[1].text.as_str()), ("耐克", "运动鞋"));
    }
}
