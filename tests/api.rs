//! The HTTP API on a loopback port over a real SQLite file and usearch index, with a tiny
//! random BERT.

mod common;

use std::sync::Arc;

use attnrec::api::AppState;
use attnrec::service::Recommender;
use common::{Fixture, TestServer};
use serde_json::json;

async fn server() -> (Fixture, TestServer) {
    let fixture = Fixture::new();
    fixture.index().await;
    let server = TestServer::start(&fixture.settings).await;
    (fixture, server)
}

#[tokio::test]
async fn recommend_returns_k_items_best_first() {
    let (_fixture, server) = server().await;
    let (status, body) = server.recommend(json!({"query": "red kettle", "k": 3})).await;
    assert_eq!(status, 200, "{body}");

    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let scores: Vec<f64> = items.iter().map(|item| item["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|pair| pair[0] >= pair[1]), "scores not descending: {scores:?}");
    assert!(items.iter().all(|item| item["id"].is_string() && item["title"].is_string()));
    assert_eq!(body["truncated"], false);
    assert!(body.get("explain").is_none());
}

#[tokio::test]
async fn exact_title_ranks_first() {
    let (_fixture, server) = server().await;
    let (_, body) = server.recommend(json!({"query": "Black hiking boots", "k": 1})).await;
    assert_eq!(body["items"][0]["id"], "4", "{body}");
    let score = body["items"][0]["score"].as_f64().unwrap();
    assert!((score - 1.0).abs() < 1e-3, "the same text should score 1, got {score}");
}

#[tokio::test]
async fn k_above_catalogue_size_returns_every_item() {
    let (_fixture, server) = server().await;
    let (status, body) = server.recommend(json!({"query": "something", "k": 50})).await;
    assert_eq!(status, 200);
    assert_eq!(body["items"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn default_k_applies_when_missing() {
    let (_fixture, server) = server().await;
    let (status, body) = server.recommend(json!({"query": "mug"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["items"].as_array().unwrap().len(), 8, "default k is 10, the catalogue has 8");
}

#[tokio::test]
async fn explain_returns_words_summing_to_one() {
    let (_fixture, server) = server().await;
    let (status, body) = server.recommend(json!({"query": "Red kettles, please!", "k": 2, "explain": true})).await;
    assert_eq!(status, 200, "{body}");

    let tokens = body["explain"]["tokens"].as_array().unwrap();
    let words: Vec<&str> = tokens.iter().map(|token| token["text"].as_str().unwrap()).collect();
    assert_eq!(words, vec!["Red", "kettles", ",", "please", "!"]);
    let total: f64 = tokens.iter().map(|token| token["weight"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-4, "weights sum to {total}");
}

#[tokio::test]
async fn long_query_is_truncated_and_reported() {
    let (_fixture, server) = server().await;
    let query = "red kettle ".repeat(40);
    let (status, body) = server.recommend(json!({"query": query, "k": 1})).await;
    assert_eq!(status, 200);
    assert_eq!(body["truncated"], true);
}

#[tokio::test]
async fn chinese_query_is_served() {
    let (_fixture, server) = server().await;
    let (status, body) = server.recommend(json!({"query": "我要买一双耐克运动鞋", "k": 2, "explain": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
}

/// Each case: request body or raw bytes, content type, expected status, code and field.
#[tokio::test]
async fn bad_requests_get_json_errors() {
    let (_fixture, server) = server().await;
    let json_type = "application/json";
    let huge = format!("{{\"query\": \"{}\"}}", "a".repeat(70_000));
    let long_query = json!({"query": "x".repeat(2001)}).to_string();
    let cases: Vec<(&str, String, &str, u16, &str, Option<&str>)> = vec![
        ("empty query", json!({"query": ""}).to_string(), json_type, 422, "invalid_request", Some("query")),
        ("whitespace query", json!({"query": " \t\n "}).to_string(), json_type, 422, "invalid_request", Some("query")),
        ("query too long", long_query, json_type, 422, "invalid_request", Some("query")),
        ("k zero", json!({"query": "mug", "k": 0}).to_string(), json_type, 422, "invalid_request", Some("k")),
        ("k above max", json!({"query": "mug", "k": 101}).to_string(), json_type, 422, "invalid_request", Some("k")),
        ("k negative", json!({"query": "mug", "k": -1}).to_string(), json_type, 422, "invalid_request", Some("k")),
        ("k as string", json!({"query": "mug", "k": "5"}).to_string(), json_type, 422, "invalid_request", Some("k")),
        ("k fractional", json!({"query": "mug", "k": 2.5}).to_string(), json_type, 422, "invalid_request", Some("k")),
        ("query as number", json!({"query": 5}).to_string(), json_type, 422, "invalid_request", Some("query")),
        ("missing query", json!({"k": 5}).to_string(), json_type, 422, "invalid_request", Some("query")),
        ("unknown field", json!({"query": "mug", "top_k": 5}).to_string(), json_type, 422, "invalid_request", Some("top_k")),
        ("array body", "[1, 2]".to_string(), json_type, 422, "invalid_request", None),
        ("malformed JSON", "{\"query\": ".to_string(), json_type, 400, "invalid_json", None),
        ("empty body", String::new(), json_type, 400, "invalid_json", None),
        ("text content type", json!({"query": "mug"}).to_string(), "text/plain", 415, "unsupported_media_type", None),
        ("form content type", "query=mug".to_string(), "application/x-www-form-urlencoded", 415, "unsupported_media_type", None),
        ("body over limit", huge, json_type, 413, "payload_too_large", None),
    ];

    for (name, body, content_type, status, code, field) in cases {
        let response = server
            .client
            .post(server.url("/recommend"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}: status");
        let body: serde_json::Value = response.json().await.unwrap_or_else(|err| panic!("{name}: body is not JSON: {err}"));
        assert_eq!(body["error"]["code"], code, "{name}: code in {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|message| !message.is_empty()), "{name}: message");
        match field {
            Some(field) => assert_eq!(body["error"]["field"], field, "{name}: field in {body}"),
            None => assert!(body["error"].get("field").is_none() || body["error"]["field"].is_string(), "{name}: field"),
        }
    }
}

#[tokio::test]
async fn missing_content_type_is_415() {
    let (_fixture, server) = server().await;
    let response = server.client.post(server.url("/recommend")).body("{\"query\": \"mug\"}").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type");
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let (_fixture, server) = server().await;
    let response = server.client.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].as_str().unwrap().contains("/nope"));
}

#[tokio::test]
async fn wrong_method_is_405_json() {
    let (_fixture, server) = server().await;
    let response = server.client.get(server.url("/recommend")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn full_admission_answers_429_with_retry_after() {
    let fixture = Fixture::new();
    fixture.index().await;
    let recommender = Arc::new(Recommender::open(&fixture.settings).await.unwrap());
    let mut state = AppState::new(recommender, &fixture.settings);
    state.admission = Arc::new(tokio::sync::Semaphore::new(0));
    let server = TestServer::start_with_state(state, &fixture.settings).await;

    let response = server.client.post(server.url("/recommend")).json(&json!({"query": "mug"})).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
}

#[tokio::test]
async fn health_and_ready_report_status() {
    let (_fixture, server) = server().await;
    let health: serde_json::Value = server.client.get(server.url("/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");

    let response = server.client.get(server.url("/ready")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let ready: serde_json::Value = response.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["items"], 8);
    assert_eq!(ready["device"], "cpu");
}

#[tokio::test]
async fn metrics_expose_request_and_encoder_series() {
    let (_fixture, server) = server().await;
    server.recommend(json!({"query": "mug"})).await;
    let response = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for name in [
        "attnrec_http_requests_total{method=\"POST\",route=\"/recommend\",status=\"200\"}",
        "attnrec_http_request_duration_seconds_bucket",
        "attnrec_encoder_batch_size_bucket",
        "attnrec_encoder_forward_seconds_bucket",
        "attnrec_index_items 8",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
}

#[tokio::test]
async fn openapi_document_is_served() {
    let (_fixture, server) = server().await;
    let text = server.client.get(server.url("/openapi.yaml")).send().await.unwrap().text().await.unwrap();
    assert_eq!(text, attnrec::api::OPENAPI_YAML);
    assert!(text.contains("/recommend"));
}

#[tokio::test]
async fn request_id_is_echoed_or_created() {
    let (_fixture, server) = server().await;
    let echoed = server.client.get(server.url("/health")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
    let created = server.client.get(server.url("/health")).send().await.unwrap();
    assert_eq!(created.headers()["x-request-id"].to_str().unwrap().len(), 36);
}

#[tokio::test]
async fn concurrent_requests_match_single_results() {
    let (_fixture, server) = server().await;
    let queries = ["red kettle", "running shoes for the park and the road", "drill", "a lamp for my desk please"];
    let mut expected = Vec::new();
    for query in queries {
        expected.push(server.recommend(json!({"query": query, "k": 5})).await.1["items"].clone());
    }

    let server = Arc::new(server);
    let mut tasks = Vec::new();
    for round in 0..200 {
        let server = server.clone();
        let query = queries[round % queries.len()];
        tasks.push(tokio::spawn(async move { (round % queries.len(), server.recommend(json!({"query": query, "k": 5})).await) }));
    }
    for task in tasks {
        let (which, (status, body)) = task.await.unwrap();
        assert_eq!(status, 200);
        let ids = |items: &serde_json::Value| items.as_array().unwrap().iter().map(|item| item["id"].clone()).collect::<Vec<_>>();
        assert_eq!(ids(&body["items"]), ids(&expected[which]), "query {which} ranked differently inside a batch");
    }
}

#[tokio::test]
async fn text_over_token_budget_runs_alone() {
    let mut fixture = Fixture::new();
    fixture.index().await;
    fixture.settings.batching.max_batch_tokens = 8;
    let server = TestServer::start(&fixture.settings).await;
    let (status, body) = server.recommend(json!({"query": "red kettle and blue mug and black hiking boots", "k": 2})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
}
