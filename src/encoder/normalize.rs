//! Text normalisation before tokenization, so that the same words typed differently give the
//! same tokens: Unicode NFKC (which also maps full-width ASCII such as "ＮＩＫＥ" to "NIKE"
//! and the ideographic space to a space), control characters removed, whitespace collapsed.

use unicode_normalization::UnicodeNormalization;

/// Returns the normalised text: NFKC, control characters dropped (tabs and line breaks
/// become spaces), runs of whitespace collapsed to one space, no leading or trailing space.
pub fn normalize_text(text: &str) -> String {
    // Invisible characters go before NFKC, so a combining mark that followed one still
    // composes with its base letter.
    let visible = text.chars().filter(|c| c.is_whitespace() || !(c.is_control() || is_invisible_format(*c)));
    let mut normalized = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in visible.nfkc() {
        if c.is_whitespace() {
            pending_space = !normalized.is_empty();
            continue;
        }
        if pending_space {
            normalized.push(' ');
            pending_space = false;
        }
        normalized.push(c);
    }
    normalized
}

/// Zero-width and byte-order characters that look like nothing but would become tokens.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_width_becomes_ascii() {
        assert_eq!(normalize_text("ＮＩＫＥ　ａｉｒ　９０"), "NIKE air 90");
    }

    #[test]
    fn whitespace_collapses_and_controls_go() {
        assert_eq!(normalize_text("  red\t\tkettle\n\u{7}1.7 L\u{200B} "), "red kettle 1.7 L");
    }

    #[test]
    fn chinese_is_unchanged() {
        assert_eq!(normalize_text("我要买一双耐克运动鞋"), "我要买一双耐克运动鞋");
    }

    #[test]
    fn compatibility_forms_fold() {
        assert_eq!(normalize_text("ﬁne ½ cup™"), "fine 1⁄2 cupTM");
    }

    #[test]
    fn marks_compose_across_removed_characters() {
        assert_eq!(normalize_text("a\u{FEFF}\u{302}"), "â");
    }

    #[test]
    fn only_controls_give_empty_text() {
        assert_eq!(normalize_text("\u{0}\u{1}\t \u{200B}"), "");
    }
}
