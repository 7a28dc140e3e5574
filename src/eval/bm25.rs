//! BM25 over item texts with tantivy (English stemming and lower-casing), the lexical baseline.

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
        index.tokenizers().register("default", english_analyzer());

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
        let cleaned: String = query.chars().map(|c| if c.is_alphanumeric() { c } else { ' ' }).collect();
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

fn english_analyzer() -> tantivy::tokenizer::TextAnalyzer {
    use tantivy::tokenizer::{Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer};
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(Stemmer::new(Language::English))
        .build()
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
    fn query_syntax_is_plain_text() {
        let texts = vec!["Red kettle".to_string()];
        let index = Bm25Index::build(&texts).unwrap();
        assert_eq!(index.search("kettle AND (\"red", 3).unwrap(), vec![0]);
        assert!(index.search("", 3).unwrap().is_empty());
    }
}
