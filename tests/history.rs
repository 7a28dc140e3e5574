//! History-aware recommendations on a loopback server. The history comes from the request or
//! the feedback log, and the query steers the attention over it (checked with the real
//! all-MiniLM-L6-v2). Without history the result is unchanged. Also: bad history input, and
//! history weights learned from the feedback log by next-item prediction.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use attnrec::history::{HistoryTrainOptions, HistoryWeights};
use common::{real_model_dir, Fixture, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

/// Sneakers, kettles and a few others, for the real model.
const SHOP: &str = "id,title\n\
    nike-air,Nike Air Zoom running sneakers\n\
    nike-run,Nike road running shoes\n\
    adidas-run,Adidas road running shoes\n\
    kettle-steel,Stainless steel electric kettle\n\
    kettle-glass,Glass electric kettle with tea infuser\n\
    lamp,LED desk lamp\n\
    hose,Green garden hose\n\
    mug,Blue coffee mug\n";

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

async fn real_server() -> (Fixture, TestServer) {
    let mut fixture = Fixture::with_catalog(SHOP);
    fixture.settings.model.source = real_model_dir().display().to_string();
    fixture.settings.model.max_tokens = 64;
    fixture.index().await;
    let server = TestServer::start(&fixture.settings).await;
    (fixture, server)
}

async fn ok(server: &TestServer, request: Value) -> Value {
    let (status, body) = server.recommend(request).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn ids(body: &Value) -> Vec<&str> {
    body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap()).collect()
}

fn score_of(body: &Value, id: &str) -> f64 {
    body["items"].as_array().unwrap().iter().find(|item| item["id"] == id).unwrap_or_else(|| panic!("{id} missing from {body}"))["score"].as_f64().unwrap()
}

fn history_weight(body: &Value, id: &str) -> f64 {
    let weights = body["explain"]["history"].as_array().unwrap_or_else(|| panic!("no history explanation in {body}"));
    weights.iter().find(|entry| entry["id"] == id).unwrap()["weight"].as_f64().unwrap()
}

#[tokio::test]
async fn query_picks_matching_history_items() {
    let (_fixture, server) = real_server().await;
    let history = json!(["kettle-steel", "nike-air"]);

    let shoes = ok(&server, json!({"query": "running shoes", "history": history, "explain": true, "mode": "vector"})).await;
    assert!(history_weight(&shoes, "nike-air") > 0.9, "{shoes}");
    let kettle = ok(&server, json!({"query": "a kettle for tea", "history": history, "explain": true, "mode": "vector"})).await;
    assert!(history_weight(&kettle, "kettle-steel") > 0.9, "{kettle}");

    // The sneakers clicked before pull the same brand's running shoes ahead of the other's.
    let plain = ok(&server, json!({"query": "running shoes", "mode": "vector"})).await;
    let gap = |body: &Value| score_of(body, "nike-run") - score_of(body, "adidas-run");
    assert!(gap(&shoes) > gap(&plain), "with history {} vs without {}", gap(&shoes), gap(&plain));
    assert_eq!(ids(&shoes)[0], "nike-run", "{shoes}");
    let explained: Vec<&str> = shoes["explain"]["history"].as_array().unwrap().iter().map(|entry| entry["id"].as_str().unwrap()).collect();
    assert_eq!(explained, vec!["nike-air", "kettle-steel"], "most recent first");
    assert!(shoes["explain"]["tokens"].is_array());
}

#[tokio::test]
async fn no_history_keeps_the_result() {
    let (_fixture, server) = real_server().await;
    let plain = ok(&server, json!({"query": "running shoes", "k": 8})).await;
    for extra in [json!({"history": []}), json!({"user_id": "never-seen"}), json!({"user_id": "never-seen", "history": []})] {
        let mut request = json!({"query": "running shoes", "k": 8});
        request.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        assert_eq!(ok(&server, request).await["items"], plain["items"]);
    }
}

#[tokio::test]
async fn feedback_log_supplies_history() {
    let (_fixture, server) = real_server().await;
    let events: Vec<Value> = ["kettle-steel", "hose", "kettle-glass"]
        .iter()
        .enumerate()
        .map(|(n, item)| json!({"user_id": "shopper-7", "item_id": item, "event": "click", "timestamp": now() - 100.0 + n as f64}))
        .collect();
    let (status, body) = server.call(Method::POST, "/feedback/batch", Some(json!({"events": events}))).await;
    assert_eq!(status, 200, "{body}");

    // History alone: the kettles the shopper keeps looking at decide, and what they already
    // saw can be left out.
    let body = ok(&server, json!({"user_id": "shopper-7", "k": 3, "explain": true, "exclude_history": true, "mode": "vector"})).await;
    let explained: Vec<&str> = body["explain"]["history"].as_array().unwrap().iter().map(|entry| entry["id"].as_str().unwrap()).collect();
    assert_eq!(explained, vec!["kettle-glass", "hose", "kettle-steel"]);
    assert!(body["explain"].get("tokens").is_none(), "{body}");
    assert!(ids(&body).iter().all(|id| !explained.contains(id)), "{body}");

    let with_history = ok(&server, json!({"user_id": "shopper-7", "k": 8, "mode": "vector"})).await;
    assert!(ids(&with_history)[..2].iter().all(|id| id.starts_with("kettle")), "{with_history}");
}

#[tokio::test]
async fn bad_history_rejected_with_field() {
    let fixture = Fixture::new();
    fixture.index().await;
    let server = TestServer::start(&fixture.settings).await;
    let cases = [
        (json!({"user_id": "nobody"}), "user_id"),
        (json!({"history": ["1", "missing"]}), "history[1]"),
        (json!({"history": ["1", "bad/id"]}), "history[1]"),
        (json!({"history": (0..201).map(|n| n.to_string()).collect::<Vec<_>>()}), "history"),
        (json!({"history": [], "negative": ["1"]}), "history"),
        (json!({"history": [], "user_id": "someone"}), "history"),
        (json!({"negative": ["1"]}), "negative"),
        (json!({"user_id": ""}), "user_id"),
        (json!({"query": "kettle", "exclude_purchased": true}), "exclude_purchased"),
    ];
    for (request, field) in cases {
        let (status, body) = server.recommend(request.clone()).await;
        assert_eq!(status, 422, "{request} gave {body}");
        assert_eq!(body["error"]["field"], field, "{request} gave {body}");
    }
    let (status, body) = server.recommend(json!({"history": ["1", "3", "1"], "explain": true})).await;
    assert_eq!(status, 200, "{body}");
    let explained: Vec<&str> = body["explain"]["history"].as_array().unwrap().iter().map(|entry| entry["id"].as_str().unwrap()).collect();
    assert_eq!(explained, vec!["1", "3"], "distinct, most recent first");
}

/// Every shopper cycles through five of the catalogue's eight items, each in their own order,
/// so the next item is always the least recent of the last five: a rule that only the
/// learned recency bias can express.
#[tokio::test]
async fn feedback_training_learns_next_item() {
    let fixture = Fixture::new();
    fixture.index().await;
    let server = TestServer::start(&fixture.settings).await;
    let start = now() - 86_400.0;
    let mut events = Vec::new();
    for shopper in 0..48 {
        // Strides 3 and 5 are prime to 8, so each cycle visits five different items.
        let stride = if shopper % 2 == 0 { 3 } else { 5 };
        let cycle: Vec<usize> = (0..5).map(|step| (shopper / 2 + step * stride) % 8 + 1).collect();
        for step in 0..12 {
            events.push(json!({"user_id": format!("s{shopper}"), "item_id": cycle[step % 5].to_string(), "event": "click", "timestamp": start + (shopper * 100 + step) as f64}));
        }
    }
    for chunk in events.chunks(100) {
        let (status, body) = server.call(Method::POST, "/feedback/batch", Some(json!({"events": chunk}))).await;
        assert_eq!(status, 200, "{body}");
    }
    drop(server);

    let out = fixture.settings.data_dir.join(attnrec::service::HISTORY_FILE);
    let options = HistoryTrainOptions { max_items: 10, max_epochs: 60, patience: 15, batch_size: 32, scalar_learning_rate: 0.05, exclude_seen: false, ..HistoryTrainOptions::default() };
    let report = attnrec::train::train_history_from_feedback(&fixture.settings, &out, &fixture.path("cache"), &options).await.unwrap();
    assert!(report.best_validation.ndcg_at_10 > 0.9, "{report:?}");
    assert!(report.best_validation.ndcg_at_10 > report.baseline_validation.ndcg_at_10 + 0.1, "{report:?}");
    assert!(out.with_extension("json").is_file());
    let weights = HistoryWeights::load(&out, attnrec::testing::TINY_HIDDEN, &candle_core::Device::Cpu).unwrap();
    assert_eq!(weights.checksum().unwrap(), report.checksum);

    // The server picks the weights up from the data directory and predicts the next item.
    let mut settings = fixture.settings.clone();
    settings.history.max_items = 10;
    let server = TestServer::start(&settings).await;
    let body = ok(&server, json!({"history": ["2", "5", "8", "3", "6"], "k": 1, "explain": true, "mode": "vector"})).await;
    assert_eq!(ids(&body), vec!["2"], "the least recent of the last five comes next: {body}");
    assert!(history_weight(&body, "2") > 0.5, "{body}");
}

#[tokio::test]
async fn exclude_history_leaves_out_every_listed_item() {
    let fixture = Fixture::new();
    fixture.index().await;
    let mut settings = fixture.settings.clone();
    settings.history.max_items = 2;
    let server = TestServer::start(&settings).await;
    let listed = json!(["1", "2", "3", "4", "5"]);
    let body = ok(&server, json!({"history": listed, "exclude_history": true, "k": 8, "mode": "vector"})).await;
    let mut found = ids(&body);
    found.sort();
    assert_eq!(found, vec!["6", "7", "8"], "{body}");
    let body = ok(&server, json!({"history": listed, "explain": true, "mode": "vector"})).await;
    assert_eq!(body["explain"]["history"].as_array().unwrap().len(), 2, "only the most recent shape the interest: {body}");
}

#[tokio::test]
async fn reindex_keeps_feedback_history() {
    let fixture = Fixture::new();
    fixture.index().await;
    let server = TestServer::start(&fixture.settings).await;
    let events: Vec<Value> = ["3", "4"].iter().map(|item| json!({"user_id": "shopper-9", "item_id": item, "event": "click", "timestamp": now() - 10.0})).collect();
    let (status, body) = server.call(Method::POST, "/feedback/batch", Some(json!({"events": events}))).await;
    assert_eq!(status, 200, "{body}");
    drop(server);

    // Dropping the server releases the data directory once its tasks finish.
    let mut rebuilt = false;
    for _ in 0..50 {
        if attnrec::indexer::build_data_dir(&fixture.settings, &fixture.catalog, None).await.is_ok() {
            rebuilt = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(rebuilt, "the catalogue was not rebuilt");
    let server = TestServer::start(&fixture.settings).await;
    let body = ok(&server, json!({"user_id": "shopper-9", "explain": true})).await;
    assert_eq!(body["explain"]["history"].as_array().unwrap().len(), 2, "{body}");
}
