//! The catalogue and feedback endpoints on a loopback server over real SQLite and usearch
//! files: writes become searchable before the response, deletes never come back, keys guard
//! every write, and bad input is rejected without changing anything.

mod common;

use attnrec::catalog::ItemStore;
use attnrec::feedback::FeedbackLog;
use common::{Fixture, TestServer, API_KEY};
use reqwest::Method;
use serde_json::{json, Value};

async fn server_with(configure: impl FnOnce(&mut Fixture)) -> (Fixture, TestServer) {
    let mut fixture = Fixture::new();
    configure(&mut fixture);
    fixture.index().await;
    let server = TestServer::start(&fixture.settings).await;
    (fixture, server)
}

async fn server() -> (Fixture, TestServer) {
    server_with(|_| {}).await
}

async fn top_ids(server: &TestServer, query: &str, k: usize) -> Vec<String> {
    let (status, body) = server.recommend(json!({"query": query, "k": k})).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn upsert_searchable_on_response() {
    let (_fixture, server) = server().await;
    let (status, body) = server.call(Method::PUT, "/items/sku-9", Some(json!({"title": "Yellow rain jacket", "attributes": {"price": 49.5}}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "created");
    assert!(body["seq"].as_u64().unwrap() > 0);

    let (_, found) = server.recommend(json!({"query": "Yellow rain jacket", "k": 1})).await;
    assert_eq!(found["items"][0]["id"], "sku-9", "{found}");
    assert!((found["items"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-3);

    let (status, item) = server.call(Method::GET, "/items/sku-9", None).await;
    assert_eq!(status, 200);
    assert_eq!(item["text"], "Yellow rain jacket");
    assert_eq!(item["attributes"], json!({"price": 49.5}));
    assert_eq!(item["seq"], body["seq"]);
}

#[tokio::test]
async fn upsert_after_delete_keeps_latest() {
    let (_fixture, server) = server().await;
    server.call(Method::PUT, "/items/x1", Some(json!({"title": "Purple yoga mat"}))).await;
    let (status, updated) = server.call(Method::PUT, "/items/x1", Some(json!({"title": "Orange yoga mat"}))).await;
    assert_eq!((status, updated["status"].as_str()), (200, Some("updated")));
    assert!(!top_ids(&server, "Purple yoga mat", 20).await.is_empty());
    assert_eq!(top_ids(&server, "Orange yoga mat", 1).await, vec!["x1"]);

    let (status, deleted) = server.call(Method::DELETE, "/items/x1", None).await;
    assert_eq!((status, deleted["status"].as_str()), (200, Some("deleted")));
    for query in ["Orange yoga mat", "Purple yoga mat", "mat"] {
        assert!(!top_ids(&server, query, 50).await.contains(&"x1".to_string()), "deleted item returned for {query}");
    }
    let (status, body) = server.call(Method::GET, "/items/x1", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, _) = server.call(Method::DELETE, "/items/x1", None).await;
    assert_eq!(status, 404);

    let (status, again) = server.call(Method::PUT, "/items/x1", Some(json!({"title": "Teal yoga mat"}))).await;
    assert_eq!((status, again["status"].as_str()), (200, Some("created")));
    let (_, item) = server.call(Method::GET, "/items/x1", None).await;
    assert_eq!(item["title"], "Teal yoga mat");
    assert_eq!(top_ids(&server, "Teal yoga mat", 1).await, vec!["x1"]);
}

#[tokio::test]
async fn large_k_after_deletes() {
    let (_fixture, server) = server().await;
    for id in ["1", "2", "3"] {
        assert_eq!(server.call(Method::DELETE, &format!("/items/{id}"), None).await.0, 200);
    }
    let ids = top_ids(&server, "anything", 100).await.len();
    assert_eq!(ids, 5);
    let (_, ready) = server.call(Method::GET, "/ready", None).await;
    assert_eq!(ready["items"], 5);
}

#[tokio::test]
async fn batch_upsert_answers_in_order() {
    let (_fixture, server) = server().await;
    let batch = json!({"items": [
        {"id": "b1", "title": "Silver watch"},
        {"id": "1", "title": "Red electric kettle", "attributes": {"brand": "Acme", "price": 21.0}},
        {"id": "b2", "title": "Wool scarf", "text": "Wool scarf, warm and soft"},
    ]});
    let (status, body) = server.call(Method::POST, "/items/batch", Some(batch)).await;
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<&str> = body["items"].as_array().unwrap().iter().map(|item| item["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["created", "updated", "created"]);
    assert_eq!(top_ids(&server, "Wool scarf, warm and soft", 1).await, vec!["b2"]);
}

#[tokio::test]
async fn writes_need_key() {
    let (_fixture, server) = server().await;
    let url = server.url("/items/k1");
    let body = json!({"title": "Lamp"});
    let missing = server.client.put(&url).json(&body).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let wrong = server.client.put(&url).bearer_auth("not-the-key").json(&body).send().await.unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let error: Value = wrong.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unauthorized");
    for (method, path) in [(Method::DELETE, "/items/1"), (Method::POST, "/items/batch"), (Method::POST, "/feedback"), (Method::POST, "/feedback/batch")] {
        let status = server.client.request(method, server.url(path)).json(&json!({})).send().await.unwrap().status();
        assert_eq!(status.as_u16(), 401, "{path}");
    }
    assert_eq!(server.client.get(server.url("/items/1")).send().await.unwrap().status().as_u16(), 200);
    assert_eq!(server.client.put(&url).bearer_auth(API_KEY).json(&body).send().await.unwrap().status().as_u16(), 200);
}

#[tokio::test]
async fn writes_disabled_without_keys() {
    let (_fixture, server) = server_with(|fixture| fixture.settings.auth.api_keys.clear()).await;
    let (status, body) = server.call(Method::PUT, "/items/k1", Some(json!({"title": "Lamp"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("writes_disabled")));
}

#[tokio::test]
async fn protected_reads_need_key() {
    let (_fixture, server) = server_with(|fixture| fixture.settings.auth.protect_reads = true).await;
    let anonymous = server.client.post(server.url("/recommend")).json(&json!({"query": "kettle"})).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    assert_eq!(server.client.get(server.url("/items/1")).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(server.call(Method::POST, "/recommend", Some(json!({"query": "kettle"}))).await.0, 200);
    assert_eq!(server.client.get(server.url("/health")).send().await.unwrap().status().as_u16(), 200);
}

async fn feedback_count(fixture: &Fixture) -> u64 {
    let store = ItemStore::open(&fixture.settings.data_dir.join("catalog.db")).await.unwrap();
    FeedbackLog::new(store, &fixture.settings.feedback).count().await.unwrap()
}

#[tokio::test]
async fn feedback_stored_unknown_item_rejected() {
    let (fixture, server) = server().await;
    let event = json!({"user_id": "shopper-1", "query": "kettle", "item_id": "1", "event": "click"});
    let (status, body) = server.call(Method::POST, "/feedback", Some(event)).await;
    assert_eq!((status, body["stored"].as_u64()), (200, Some(1)), "{body}");

    let batch = json!({"events": [
        {"item_id": "2", "event": "purchase", "value": 2, "timestamp": 1_790_000_000},
        {"item_id": "3", "event": "rating", "value": 4.5, "timestamp": "2026-11-30T08:00:00Z"},
    ]});
    assert_eq!(server.call(Method::POST, "/feedback/batch", Some(batch)).await.0, 200);
    assert_eq!(feedback_count(&fixture).await, 3);

    let (status, body) = server.call(Method::POST, "/feedback", Some(json!({"item_id": "nope", "event": "click"}))).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("item_id")), "{body}");
    let unknown_second = json!({"events": [{"item_id": "1", "event": "click"}, {"item_id": "nope", "event": "click"}]});
    let (status, body) = server.call(Method::POST, "/feedback/batch", Some(unknown_second)).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("events[1].item_id")), "{body}");
    assert_eq!(feedback_count(&fixture).await, 3, "a rejected batch stores nothing");
}

#[tokio::test]
async fn batch_body_limit_above_single() {
    let (_fixture, server) = server().await;
    let items: Vec<Value> = (0..100).map(|n| json!({"id": format!("big-{n}"), "title": format!("item {n} {}", "x".repeat(900))})).collect();
    let (status, body) = server.call(Method::POST, "/items/batch", Some(json!({"items": items}))).await;
    assert_eq!(status, 200, "a 90 KB batch fits the batch limit: {body}");
    let (status, _) = server.call(Method::PUT, "/items/big", Some(json!({"title": "y".repeat(70_000)}))).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn deletes_trigger_background_rebuild() {
    let (_fixture, server) = server_with(|fixture| fixture.settings.index.rebuild_removed_ratio = 0.2).await;
    for id in ["4", "5", "6"] {
        assert_eq!(server.call(Method::DELETE, &format!("/items/{id}"), None).await.0, 200);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let metrics = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let rebuilds = metrics.lines().find_map(|line| line.strip_prefix("attnrec_index_rebuilds_total ")).and_then(|value| value.parse::<f64>().ok());
        if rebuilds.unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no rebuild after removing 3 of 8 items");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(top_ids(&server, "Steel hammer", 1).await, vec!["7"]);
    assert_eq!(top_ids(&server, "anything", 50).await.len(), 5);
}

#[tokio::test]
async fn lost_index_rebuilt_at_start() {
    let fixture = Fixture::new();
    fixture.index().await;
    let server = TestServer::start(&fixture.settings).await;
    server.call(Method::PUT, "/items/lost-1", Some(json!({"title": "Copper frying pan"}))).await;
    server.call(Method::DELETE, "/items/2", None).await;
    drop(server);

    std::fs::remove_file(fixture.settings.data_dir.join("items.usearch")).unwrap();
    let restarted = TestServer::start(&fixture.settings).await;
    let (_, ready) = restarted.call(Method::GET, "/ready", None).await;
    assert_eq!(ready["items"], 8);
    assert_eq!(top_ids(&restarted, "Copper frying pan", 1).await, vec!["lost-1"]);
    assert!(!top_ids(&restarted, "Blue coffee mug", 10).await.contains(&"2".to_string()));
}
