//! BM25 over item texts with tantivy: lower-cased, English-stemmed words without stop words,
//! with text that contains Chinese split into dictionary words (jieba). The evaluation's
//! lexical baseline and the lexical half of hybrid serving, kept in step with catalogue writes.

use std::sync::Mutex;

use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Schema, Value, INDEXED, STORED, TEXT};
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use tantivy::{doc, Index, IndexReader, IndexWriter, TantivyDocument, Term};

/// Memory for tantivy's indexing buffer, in bytes.
const WRITER_MEMORY: usize = 50_000_000;

#[derive(Debug, thiserror::Error)]
#[error("BM25 index failed: {0}")]
pub struct LexicalError(#[from] tantivy::TantivyError);

/// An in-memory BM25 index of item texts by item key.
pub struct LexicalIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    text: tantivy::schema::Field,
    key: tantivy::schema::Field,
}

impl LexicalIndex {
    /// Indexes `(key, text)` pairs; searches return keys.
    pub fn build<S: AsRef<str>>(documents: &[(u64, S)]) -> Result<Self, LexicalError> {
        let mut schema = Schema::builder();
        let text = schema.add_text_field("text", TEXT);
        let key = schema.add_u64_field("key", INDEXED | STORED);
        let index = Index::create_in_ram(schema.build());
        index.tokenizers().register("default", analyzer());

        // One indexing thread gives one segment, so equal scores always tie-break the same way.
        let mut writer: IndexWriter = index.writer_with_num_threads(1, WRITER_MEMORY)?;
        for (item, body) in documents {
            writer.add_document(doc!(text => body.as_ref(), key => *item))?;
        }
        writer.commit()?;
        let reader = index.reader_builder().reload_policy(tantivy::ReloadPolicy::Manual).try_into()?;
        Ok(Self { index, reader, writer: Mutex::new(writer), text, key })
    }

    /// Adds and removes documents, then makes the change visible to searches.
    pub fn apply(&self, added: &[(u64, &str)], removed: &[u64]) -> Result<(), LexicalError> {
        let mut writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for item in removed {
            writer.delete_term(Term::from_field_u64(self.key, *item));
        }
        for (item, body) in added {
            writer.add_document(doc!(self.text => *body, self.key => *item))?;
        }
        writer.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// Returns up to `k` keys for a free-text query, best first. Query syntax characters are
    /// treated as plain text, so any shopper text is accepted.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<u64>, LexicalError> {
        let searcher = self.reader.searcher();
        // The parser turns each space-separated term into a phrase of its tokens, so Chinese,
        // which has no spaces, is split into its words first and each word becomes a term.
        let spaced = if crate::segment::has_han(query) {
            crate::segment::words(query).iter().map(|(start, end)| &query[*start..*end]).collect::<Vec<_>>().join(" ")
        } else {
            query.to_string()
        };
        let cleaned: String = spaced.chars().map(|c| if c.is_alphanumeric() { c } else { ' ' }).collect();
        // Terms are ORed (the parser's default): a shopper's words rarely all appear in a title.
        let parser = QueryParser::for_index(&self.index, vec![self.text]);
        let (parsed, _errors) = parser.parse_query_lenient(&cleaned);
        let hits = searcher.search(&parsed, &TopDocs::with_limit(k.max(1)))?;
        let mut keys = Vec::with_capacity(hits.len());
        for (_score, address) in hits {
            let document: TantivyDocument = searcher.doc(address)?;
            if let Some(item) = document.get_first(self.key).and_then(|value| value.as_u64()) {
                keys.push(item);
            }
        }
        Ok(keys)
    }
}

/// Lower-cases, drops English stop words (so "for" and "the" cannot make a match on their own)
/// and stems.
fn analyzer() -> tantivy::tokenizer::TextAnalyzer {
    use tantivy::tokenizer::{Language, LowerCaser, RemoveLongFilter, Stemmer, StopWordFilter, TextAnalyzer};
    let stop_words = StopWordFilter::new(Language::English).expect("tantivy ships English stop words");
    TextAnalyzer::builder(WordTokenizer)
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(stop_words)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// Splits text into runs of letters and digits, and text with Chinese characters into
/// dictionary words (see `crate::segment`), dropping punctuation.
#[derive(Clone)]
struct WordTokenizer;

/// The words of one text, handed out one at a time.
struct WordStream {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = WordStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream {
        let spans: Vec<(usize, usize)> = if crate::segment::has_han(text) { crate::segment::words(text) } else { alphanumeric_runs(text) };
        let tokens = spans
            .into_iter()
            .filter(|(start, end)| text[*start..*end].chars().any(char::is_alphanumeric))
            .enumerate()
            .map(|(position, (start, end))| Token { offset_from: start, offset_to: end, position, text: text[start..end].to_string(), position_length: 1 })
            .collect();
        WordStream { tokens, next: 0 }
    }
}

/// Byte ranges of the maximal runs of alphanumeric characters.
fn alphanumeric_runs(text: &str) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (position, c) in text.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(position),
            (false, Some(from)) => {
                runs.push((from, position));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(from) = start {
        runs.push((from, text.len()));
    }
    runs
}

impl TokenStream for WordStream {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(texts: &[&str]) -> LexicalIndex {
        let documents: Vec<(u64, &str)> = texts.iter().enumerate().map(|(key, text)| (key as u64, *text)).collect();
        LexicalIndex::build(&documents).unwrap()
    }

    #[test]
    fn bm25_finds_stemmed_terms() {
        let index = index(&["Red electric kettle", "Blue coffee mugs", "Cordless drill"]);
        assert_eq!(index.search("coffee mug", 3).unwrap()[0], 1);
        assert_eq!(index.search("kettles!", 3).unwrap(), vec![0]);
    }

    #[test]
    fn chinese_catalogue_matches_words() {
        let index = index(&["耐克男子跑步鞋 运动鞋", "苏泊尔电水壶 不锈钢", "Nike 运动袜"]);
        assert_eq!(index.search("我要买一双耐克运动鞋", 3).unwrap()[0], 0);
        assert_eq!(index.search("电水壶", 3).unwrap(), vec![1]);
        assert_eq!(index.search("nike", 3).unwrap(), vec![2]);
    }

    #[test]
    fn stop_words_alone_match_nothing() {
        let index = index(&["Running shoes for men", "Electric kettle"]);
        assert!(index.search("something for the tea", 3).unwrap().is_empty());
    }

    #[test]
    fn query_syntax_is_plain_text() {
        let index = index(&["Red kettle"]);
        assert_eq!(index.search("kettle AND (\"red", 3).unwrap(), vec![0]);
        assert!(index.search("", 3).unwrap().is_empty());
    }

    #[test]
    fn writes_are_searchable_and_deletes_gone() {
        let index = index(&["Red kettle"]);
        index.apply(&[(7, "Copper frying pan")], &[0]).unwrap();
        assert_eq!(index.search("pan", 3).unwrap(), vec![7]);
        assert!(index.search("kettle", 3).unwrap().is_empty());
    }
}
