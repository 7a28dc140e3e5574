//! A tiny, randomly initialised BERT written to disk, so tests and benchmarks exercise the
//! real loading, tokenization and forward code in milliseconds.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Hidden width of the tiny model.
pub const TINY_HIDDEN: usize = 32;
/// Maximum positions of the tiny model.
pub const TINY_POSITIONS: usize = 512;

const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Whole words of the tiny vocabulary; any other ASCII word splits into single-letter pieces.
const WORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "of", "for", "to", "in", "on", "with", "me", "i", "want", "please", "find",
    "something", "like", "thanks", "pair", "buy", "red", "blue", "green", "black", "white", "kettle", "mug", "cup",
    "shoes", "running", "nike", "boots", "hiking", "lamp", "desk", "chair", "table", "book", "hobbit", "ring",
    "journey", "lord", "rings", "harry", "potter", "stone", "hunger", "games", "drill", "hammer", "saw", "paint",
    "door", "window", "light", "bulb", "garden", "hose", "steel", "wood", "glass", "electric", "cordless", "small",
    "large", "new", "old", "best", "cheap", "tea", "coffee", "water", "bottle", "bag", "jacket", "shirt", "sports",
    "sock", "socks", "hat", "phone", "case", "cable", "charger",
];

/// Writes `config.json`, `tokenizer.json` and `model.safetensors` of a 2-layer, 32-wide BERT
/// with weights drawn from `seed`. The tokenizer pads and truncates at 16 tokens, like the
/// packaged MiniLM tokenizer does at 128, so tests see that setting overridden.
pub fn write_tiny_bert(dir: &Path, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let vocab = vocabulary();

    let config = json!({
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": vocab.len(), "hidden_size": TINY_HIDDEN, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": TINY_POSITIONS, "type_vocab_size": 2, "initializer_range": 0.02,
        "layer_norm_eps": 1e-12, "pad_token_id": 0, "position_embedding_type": "absolute"
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_string(&tokenizer_json(&vocab))?)?;

    let tensors = random_weights(vocab.len(), seed).map_err(std::io::Error::other)?;
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).map_err(std::io::Error::other)
}

fn vocabulary() -> Vec<String> {
    let mut vocab: Vec<String> = SPECIAL_TOKENS.iter().map(|token| token.to_string()).collect();
    vocab.extend(WORDS.iter().map(|word| word.to_string()));
    for c in ('a'..='z').chain('0'..='9') {
        if !WORDS.contains(&c.to_string().as_str()) {
            vocab.push(c.to_string());
        }
        vocab.push(format!("##{c}"));
    }
    vocab.extend([".", ",", "!", "?", "-", "'"].iter().map(|p| p.to_string()));
    vocab
}

fn tokenizer_json(vocab: &[String]) -> serde_json::Value {
    let ids: serde_json::Map<String, serde_json::Value> =
        vocab.iter().enumerate().map(|(id, token)| (token.clone(), json!(id))).collect();
    let added: Vec<serde_json::Value> = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(id, token)| json!({"id": id, "content": token, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true}))
        .collect();
    json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 16, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": null,
            "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": ids}
    })
}

fn random_weights(vocab_size: usize, seed: u64) -> candle_core::Result<HashMap<String, Tensor>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensors = HashMap::new();
    let mut normal = |name: String, shape: &[usize], std: f32| -> candle_core::Result<()> {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count).map(|_| gaussian(&mut rng) * std).collect();
        tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
        Ok(())
    };
    let h = TINY_HIDDEN;
    normal("embeddings.word_embeddings.weight".into(), &[vocab_size, h], 1.0)?;
    normal("embeddings.position_embeddings.weight".into(), &[TINY_POSITIONS, h], 0.1)?;
    normal("embeddings.token_type_embeddings.weight".into(), &[2, h], 0.1)?;
    for layer in 0..2 {
        let prefix = format!("encoder.layer.{layer}");
        for part in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"] {
            normal(format!("{prefix}.{part}.weight"), &[h, h], 0.2)?;
            normal(format!("{prefix}.{part}.bias"), &[h], 0.02)?;
        }
        normal(format!("{prefix}.intermediate.dense.weight"), &[64, h], 0.2)?;
        normal(format!("{prefix}.intermediate.dense.bias"), &[64], 0.02)?;
        normal(format!("{prefix}.output.dense.weight"), &[h, 64], 0.2)?;
        normal(format!("{prefix}.output.dense.bias"), &[h], 0.02)?;
    }

    let ones = Tensor::ones(h, candle_core::DType::F32, &Device::Cpu)?;
    let zeros = Tensor::zeros(h, candle_core::DType::F32, &Device::Cpu)?;
    let mut norms = vec!["embeddings.LayerNorm".to_string()];
    for layer in 0..2 {
        norms.push(format!("encoder.layer.{layer}.attention.output.LayerNorm"));
        norms.push(format!("encoder.layer.{layer}.output.LayerNorm"));
    }
    for norm in norms {
        tensors.insert(format!("{norm}.weight"), ones.clone());
        tensors.insert(format!("{norm}.bias"), zeros.clone());
    }
    Ok(tensors)
}

/// Draws from N(0, 1) with the Box-Muller transform.
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
    let u2: f32 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// A catalogue database for a test, on one backend, with whatever keeps it alive.
#[cfg(test)]
pub struct TestStore {
    pub store: crate::catalog::ItemStore,
    /// "sqlite" or "postgres", for assertion messages.
    pub backend: &'static str,
    /// The SQLite file's directory; with PostgreSQL, an empty directory for data files.
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database's URL.
    pub url: Option<String>,
}

#[cfg(test)]
impl TestStore {
    /// Runs one statement on the store's database, for tests that alter the schema.
    pub async fn execute(&self, sql: &str) {
        match self.store.postgres() {
            Some(postgres) => sqlx::query(sql).execute(postgres.pool()).await.map(drop),
            None => sqlx::query(sql).execute(self.store.sqlite().expect("a SQLite store").pool()).await.map(drop),
        }
        .expect("test statement runs");
    }

    /// Opens the same database again, as a restarted process would.
    pub async fn reopen(&self) -> crate::catalog::ItemStore {
        let storage = crate::config::StorageSettings { url: self.url.clone().unwrap_or_default(), ..Default::default() };
        crate::catalog::ItemStore::connect(&storage, self.dir.path()).await.expect("test database opens again")
    }
}

/// The environment variable with the URL of a PostgreSQL server for tests, as a role that may
/// create databases (`scripts/test-postgres.sh` starts one and sets it).
pub const TEST_POSTGRES_URL_VAR: &str = "ATTNREC_TEST_POSTGRES_URL";

/// Creates an empty database on the test PostgreSQL server and returns its URL, or `None`
/// when `ATTNREC_TEST_POSTGRES_URL` is unset.
pub async fn postgres_test_database() -> Option<String> {
    use sqlx::Connection;

    let server = std::env::var(TEST_POSTGRES_URL_VAR).ok().filter(|url| !url.is_empty())?;
    let name = format!("attnrec_test_{}", uuid::Uuid::new_v4().simple());
    let mut connection = sqlx::PgConnection::connect(&server).await.expect("the test PostgreSQL server accepts connections");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut connection).await.expect("test database created");
    connection.close().await.expect("connection closed");
    let (base, _database) = server.rsplit_once('/').expect("the test server URL ends in /DATABASE");
    Some(format!("{base}/{name}"))
}

/// Returns a fresh SQLite store and, when `ATTNREC_TEST_POSTGRES_URL` is set, a fresh
/// PostgreSQL store, so that one test body checks both backends.
// NOTE: without ATTNREC_TEST_POSTGRES_URL the PostgreSQL half is skipped with a message on
// stderr; `make test` starts a server and sets it.
#[cfg(test)]
pub async fn test_stores() -> Vec<TestStore> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let sqlite = crate::catalog::ItemStore::open(&dir.path().join(crate::catalog::DATABASE_FILE)).await.expect("SQLite test database opens");
    let mut stores = vec![TestStore { store: sqlite, backend: "sqlite", dir, url: None }];
    match postgres_test_database().await {
        Some(url) => {
            let storage = crate::config::StorageSettings { url: url.clone(), ..Default::default() };
            let dir = tempfile::tempdir().expect("temporary directory");
            let store = crate::catalog::ItemStore::connect(&storage, dir.path()).await.expect("PostgreSQL test database opens");
            stores.push(TestStore { store, backend: "postgres", dir, url: Some(url) });
        }
        None => eprintln!("{TEST_POSTGRES_URL_VAR} is unset, so this test checks SQLite only"),
    }
    stores
}
