//! BM25 over item texts with tantivy, the lexical baseline: lower-cased, English-stemmed
//! words, segmented by a dictionary (jieba) when the catalogue contains Chinese.

use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Schema, Value, INDEXED, STORED, TEXT};
use tantivy::{doc, Index, IndexReader, TantivyDocument};

/// Memory for tantivy's indexing buffer, in bytes.
const WRITER_MEMORY: usize = 100_000_000;

#[derive(Debug, thiserror::Error)]
#[error("BM25 index failed: {0}")]
pub struct Bm25Error(#[from] tantivy::TantivyError);

/// An in-memory BM25 index whose documents are catalogue rows.
pub struct Bm25Index {
    index: Index,
    reader: IndexReader,
    text: tantivy::schema::Field,
    row: tantivy::schema::Field,
}

impl Bm25Index {
    /// Indexes `texts`; a search result is the position of its text in this slice.
    pub fn build(texts: &[String]) -> Result<Self, Bm25Error> {
        let mut schema = Schema::builder();
        let text = schema.add_text_field("text", TEXT);
        let row = schema.add_u64_field("row", INDEXED | STORED);
        let index = Index::create_in_ram(schema.build());
        if texts.iter().any(|text| crate::segment::has_han(text)) {
            index.tokenizers().register("default", analyzer(SegmentingTokenizer));
        } else {
            index.tokenizers().register("default", analyzer(tantivy::tokenizer::SimpleTokenizer::default()));
        }

        let mut writer = index.writer(WRITER_MEMORY)?;
        for (position, body) in texts.iter().enumerate() {
            writer.add_document(doc!(text => body.as_str(), row => position as u64))?;
        }
        writer.commit()?;
        let reader = index.reader()?;
        Ok(Self { index, reader, text, row })
    }

    /// Returns up to `k` catalogue rows for a free-text query, best first. Query syntax
    /// characters are treated as plain text, so any shopper text is accepted.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<usize>, Bm25Error> {
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
        let hits = searcher.search(&parsed, &TopDocs::with_limit(k))?;
        let mut rows = Vec::with_capacity(hits.len());
        for (_score, address) in hits {
            let document: TantivyDocument = searcher.doc(address)?;
            if let Some(row) = document.get_first(self.row).and_then(|value| value.as_u64()) {
                rows.push(row as usize);
            }
        }
        Ok(rows)
    }
}

fn analyzer<T: tantivy::tokenizer::Tokenizer>(tokenizer: T) -> tantivy::tokenizer::TextAnalyzer {
    use tantivy::tokenizer::{Language, LowerCaser, RemoveLongFilter, Stemmer, TextAnalyzer};
    TextAnalyzer::builder(tokenizer).filter(RemoveLongFilter::limit(40)).filter(LowerCaser).filter(Stemmer::new(Language::English)).build()
}

/// Splits text into dictionary words (see `crate::segment`), dropping punctuation.
#[derive(Clone)]
struct SegmentingTokenizer;

/// The words of one text, handed out one at a time.
struct WordStream {
    tokens: Vec<tantivy::tokenizer::Token>,
    next: usize,
}

impl tantivy::tokenizer::Tokenizer for SegmentingTokenizer {
    type TokenStream<'a> = WordStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream {
        let tokens = crate::segment::words(text)
            .into_iter()
            .filter(|(start, end)| text[*start..*end].chars().any(char::is_alphanumeric))
            .enumerate()
            .map(|(position, (start, end))| tantivy::tokenizer::Token {
                offset_from: start,
                offset_to: end,
                position,
                text: text[start..end].to_string(),
                position_length: 1,
            })
            .collect();
        WordStream { tokens, next: 0 }
    }
}

impl tantivy::tokenizer::TokenStream for WordStream {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &tantivy::tokenizer::Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut tantivy::tokenizer::Token {
        &mut self.tokens[self.next - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_finds_stemmed_terms() {
        let texts = vec!["Red electric kettle".to_string(), "Blue coffee mugs".to_string(), "Cordless drill".to_string()];
        let index = Bm25Index::build(&texts).unwrap();
        assert_eq!(index.search("coffee mug", 3).unwrap()[0], 1);
        assert_eq!(index.search("kettles!", 3).unwrap(), vec![0]);
    }

    #[test]
    fn chinese_catalogue_matches_words() {
        let texts = vec!["耐克男子跑步鞋 运动鞋".to_string(), "苏泊尔电水壶 不锈钢".to_string(), "Nike 运动袜".to_string()];
        let index = Bm25Index::build(&texts).unwrap();
        assert_eq!(index.search("我要买一双耐克运动鞋", 3).unwrap()[0], 0);
        assert_eq!(index.search("电水壶", 3).unwrap(), vec![1]);
        assert_eq!(index.search("nike", 3).unwrap(), vec![2]);
    }

    #[test]
    fn query_syntax_is_plain_text() {
        let texts = vec!["Red kettle".to_string()];
        let index = Bm25Index::build(&texts).unwrap();
        assert_eq!(index.search("kettle AND (\"red", 3).unwrap(), vec![0]);
        assert!(index.search("", 3).unwrap().is_empty());
    }
}
