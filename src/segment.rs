//! Word segmentation for text without spaces between words (Chinese), with a dictionary
//! segmenter (jieba). Used by explanations and by BM25.

use std::sync::LazyLock;

/// The segmenter with its built-in dictionary, loaded on first use (about 0.2 s).
static SEGMENTER: LazyLock<jieba_rs::Jieba> = LazyLock::new(jieba_rs::Jieba::new);

/// Returns true when the text contains a CJK ideograph, the script that needs segmenting.
pub fn has_han(text: &str) -> bool {
    text.chars().any(|c| matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}' | '\u{20000}'..='\u{2FFFF}'))
}

/// Returns the byte ranges of the words of `text`, leaving out whitespace. Runs of other
/// scripts come back as the segmenter splits them (at spaces and punctuation).
pub fn words(text: &str) -> Vec<(usize, usize)> {
    SEGMENTER.cut(text, true).into_iter().filter(|token| !token.word.trim().is_empty()).map(|token| (token.byte_start, token.byte_end)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_splits_into_dictionary_words() {
        let text = "我要买一双耐克运动鞋";
        let found: Vec<&str> = words(text).iter().map(|(start, end)| &text[*start..*end]).collect();
        assert!(found.contains(&"耐克"), "{found:?}");
        assert!(found.contains(&"运动鞋"), "{found:?}");
    }

    #[test]
    fn mixed_text_keeps_latin_words() {
        let text = "Nike 跑步鞋 size 42";
        let found: Vec<&str> = words(text).iter().map(|(start, end)| &text[*start..*end]).collect();
        assert!(found.contains(&"Nike"), "{found:?}");
        assert!(found.contains(&"42"), "{found:?}");
    }

    #[test]
    fn han_detection() {
        assert!(has_han("买 shoes"));
        assert!(!has_han("shoes ｓｈｏｅｓ"));
    }
}
