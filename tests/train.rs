//! Training the pooling head: determinism with the tiny model, and a synthetic catalogue
//! where one or two words among filler decide the right item, with the real model.

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;

use attnrec::config::Settings;
use attnrec::encoder::{Encoder, ModelSource, TextKind, TokenizedText};
use attnrec::explain::word_weights;
use attnrec::pooling::AttentionHead;
use attnrec::train::{split_of, train, Split, TrainOptions};
use candle_core::Device;
use common::{real_model_dir, Fixture};

const COLORS: [&str; 6] = ["red", "blue", "green", "black", "white", "yellow"];
const THINGS: [&str; 6] = ["kettle", "mug", "lamp", "chair", "jacket", "bottle"];
/// Query templates: `{}` is the wanted item and `{d}` another item the shopper does not want.
const TEMPLATES: [&str; 10] = [
    "please find me something like a {} thanks",
    "hello, i would really like to buy a {} for my new home please",
    "can you show me a {} thank you so much",
    "i am looking for a nice {} today",
    "i already own a {d}, please find me a {} thanks",
    "not a {d}, i want a {}",
    "my sister has a {d} but i am looking for a {}",
    "forget the {d}, show me a {}",
    "i returned the {d} and now need a {}",
    "instead of a {d}, i would like a {}",
];

/// Fills a template with the wanted item and a distractor of another colour and kind.
fn fill(template: &str, color: usize, thing: usize) -> String {
    let distractor = format!("{} {}", COLORS[(color + 1) % COLORS.len()], THINGS[(thing + 2) % THINGS.len()]);
    template.replace("{d}", &distractor).replace("{}", &format!("{} {}", COLORS[color], THINGS[thing]))
}

/// Writes the colour-and-thing catalogue and graded judgments: the exact item is 3, the same
/// thing in another colour is 1 (irrelevant).
fn write_synthetic(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut catalog = String::from("id,title\n");
    let mut judgments = String::from("query,id,relevance\n");
    for (color_index, color) in COLORS.iter().enumerate() {
        for (thing_index, thing) in THINGS.iter().enumerate() {
            writeln!(catalog, "{color}-{thing},{color} {thing}").unwrap();
            for template in TEMPLATES {
                let query = fill(template, color_index, thing_index);
                writeln!(judgments, "\"{query}\",{color}-{thing},3").unwrap();
                for other in COLORS.iter().filter(|other| *other != color).take(2) {
                    writeln!(judgments, "\"{query}\",{other}-{thing},1").unwrap();
                }
            }
        }
    }
    let (catalog_path, judgments_path) = (dir.join("catalog.csv"), dir.join("judgments.csv"));
    std::fs::write(&catalog_path, catalog).unwrap();
    std::fs::write(&judgments_path, judgments).unwrap();
    (catalog_path, judgments_path)
}

#[test]
fn same_seed_gives_same_head() {
    let fixture = Fixture::new();
    let (catalog, judgments) = write_synthetic(fixture.dir.path());
    let options = TrainOptions { max_epochs: 3, cache_dir: fixture.path("cache"), ..TrainOptions::default() };

    let first = train(&fixture.settings, &catalog, &judgments, &fixture.path("a.safetensors"), &options).unwrap();
    let second = train(&fixture.settings, &catalog, &judgments, &fixture.path("b.safetensors"), &options).unwrap();
    assert_eq!(first.head_checksum, second.head_checksum);
    assert!(fixture.path("a.json").is_file(), "the JSON report is written beside the head");
}

/// Mean nDCG@10-style hit rate: the share of queries whose exact item ranks first.
fn top1_accuracy(encoder: &Encoder, head: &AttentionHead, queries: &[(String, String)]) -> f64 {
    let titles: Vec<String> = COLORS.iter().flat_map(|c| THINGS.iter().map(move |t| format!("{c} {t}"))).collect();
    let tokenized: Vec<TokenizedText> = encoder.tokenizer().tokenize_all(&titles, TextKind::Item).unwrap();
    let batch: Vec<&TokenizedText> = tokenized.iter().collect();
    let items = head.pool_items(&encoder.forward(&batch).unwrap()).unwrap().to_vec2::<f32>().unwrap();

    let mut hits = 0;
    for (query, expected) in queries {
        let tokens = encoder.tokenizer().tokenize(query, TextKind::Query).unwrap();
        let vector = head.pool_queries(&encoder.forward(&[&tokens]).unwrap()).unwrap().vectors.to_vec2::<f32>().unwrap().remove(0);
        let best = items
            .iter()
            .enumerate()
            .map(|(row, item)| (row, item.iter().zip(&vector).map(|(a, b)| a * b).sum::<f32>()))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
            .0;
        hits += usize::from(titles[best] == *expected);
    }
    hits as f64 / queries.len() as f64
}

#[test]
fn trained_head_attends_to_deciding_words() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, judgments) = write_synthetic(dir.path());
    let mut settings = Settings::default();
    settings.model.source = real_model_dir().display().to_string();
    let options = TrainOptions {
        learning_rate: 1e-4,
        attention_learning_rate: 1e-2,
        max_epochs: 40,
        patience: 5, cache_dir: dir.path().join("cache"), ..TrainOptions::default() };
    let out = dir.path().join("head.safetensors");
    let report = train(&settings, &catalog, &judgments, &out, &options).unwrap();
    assert!(report.best_validation_ndcg_at_10 > report.baseline_validation_ndcg_at_10, "{report:?}");

    let files = ModelSource::Directory(real_model_dir()).resolve().unwrap();
    let encoder = Encoder::load(&files, 128, Device::Cpu).unwrap();
    let trained = AttentionHead::load(&out, encoder.hidden_size(), &Device::Cpu).unwrap();
    let untrained = AttentionHead::untrained(encoder.hidden_size(), &Device::Cpu).unwrap();

    // Only held-out test queries are scored.
    let mut test_queries = Vec::new();
    for (color_index, color) in COLORS.iter().enumerate() {
        for (thing_index, thing) in THINGS.iter().enumerate() {
            for template in TEMPLATES {
                let query = fill(template, color_index, thing_index);
                if split_of(&query, options.seed, options.fractions) == Split::Test {
                    test_queries.push((query, format!("{color} {thing}")));
                }
            }
        }
    }
    assert!(test_queries.len() >= 20, "only {} test queries", test_queries.len());
    let trained_accuracy = top1_accuracy(&encoder, &trained, &test_queries);
    let mean_accuracy = top1_accuracy(&encoder, &untrained, &test_queries);
    assert!(trained_accuracy > mean_accuracy, "trained {trained_accuracy} vs mean pooling {mean_accuracy}");

    let query = "please find me something like a red kettle thanks";
    let tokens = encoder.tokenizer().tokenize(query, TextKind::Query).unwrap();
    let attention = trained.pool_queries(&encoder.forward(&[&tokens]).unwrap()).unwrap().attention.to_vec2::<f32>().unwrap().remove(0);
    let words = word_weights(&tokens, &attention);
    let weights: HashMap<&str, f32> = words.iter().map(|word| (word.text.as_str(), word.weight)).collect();
    let deciding = weights["red"] + weights["kettle"];
    assert!(deciding > 0.5, "red and kettle get {deciding} of the attention, not most of it: {words:?}");
    let largest = words.iter().max_by(|a, b| a.weight.total_cmp(&b.weight)).unwrap();
    assert!(["red", "kettle"].contains(&largest.text.as_str()), "the largest weight is on {:?}: {words:?}", largest.text);
    println!("attention: {words:?}; top-1 accuracy trained {trained_accuracy:.3}, mean pooling {mean_accuracy:.3}");
}

#[test]
fn eval_compares_methods_and_writes_report() {
    let fixture = Fixture::new();
    let (catalog, judgments) = write_synthetic(fixture.dir.path());
    let options = TrainOptions { max_epochs: 2, cache_dir: fixture.path("cache"), ..TrainOptions::default() };
    let head = fixture.path("head.safetensors");
    train(&fixture.settings, &catalog, &judgments, &head, &options).unwrap();

    let compare = attnrec::eval::CompareOptions {
        head: Some(head),
        split: Split::Test,
        seed: options.seed,
        threshold: 2.5,
        limit: None,
        cache_dir: fixture.path("cache"),
        out_dir: Some(fixture.path("report")),
    };
    let reports = attnrec::eval::compare_methods(&fixture.settings, &catalog, &judgments, &compare).unwrap();
    let names: Vec<&str> = reports.iter().map(|report| report.name.as_str()).collect();
    assert_eq!(names, vec!["BM25", "CLS pooling", "mean pooling (untrained head)", "dynamic-attention head (trained)", "hybrid: BM25 + trained head (RRF)"]);
    assert!(reports.iter().all(|report| report.queries > 0));
    assert!(reports.iter().all(|report| (0.0..=1.0).contains(&report.ndcg_at_10)));

    let table = std::fs::read_to_string(fixture.path("report/eval.md")).unwrap();
    assert!(table.contains("| BM25 |"), "{table}");
    if std::path::Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists() {
        let png = std::fs::read(fixture.path("report/eval.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_from_feedback_log() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, _) = write_synthetic(dir.path());
    let mut fixture = Fixture::with_catalog(&std::fs::read_to_string(&catalog).unwrap());
    fixture.settings.feedback.user_id_salt = "test-salt".into();
    fixture.index().await;
    let server = common::TestServer::start(&fixture.settings).await;

    let mut events = Vec::new();
    for color in 0..COLORS.len() {
        for thing in 0..THINGS.len() {
            for (number, template) in TEMPLATES.iter().enumerate() {
                let event = if number % 3 == 0 { "purchase" } else { "click" };
                let item_id = format!("{}-{}", COLORS[color], THINGS[thing]);
                events.push(serde_json::json!({"user_id": format!("u{number}"), "query": fill(template, color, thing), "item_id": item_id, "event": event}));
            }
        }
    }
    let (status, body) = server.call(reqwest::Method::POST, "/feedback/batch", Some(serde_json::json!({"events": events}))).await;
    assert_eq!(status, 200, "{body}");
    drop(server);

    let data = attnrec::train::feedback_training_data(&fixture.settings).await.unwrap();
    assert_eq!(data.items.len(), 36);
    assert_eq!(data.judgments.queries.len(), 360);
    let out = fixture.path("feedback-head.safetensors");
    let options = TrainOptions { max_epochs: 2, cache_dir: fixture.path("cache"), ..TrainOptions::default() };
    let settings = fixture.settings.clone();
    let report = tokio::task::spawn_blocking(move || attnrec::train::train_on(&settings, data, &out, &options)).await.unwrap().unwrap();
    assert!(report.train_queries > 200, "{} train queries", report.train_queries);
    assert!(report.validation_queries > 0, "{} validation queries", report.validation_queries);
    assert_eq!(report.examples, report.train_queries, "every query has one positive item, clicks included");
    assert!(fixture.path("feedback-head.safetensors").is_file());
}
