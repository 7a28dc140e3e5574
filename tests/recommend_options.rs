//! Request options of `/recommend` on a loopback server: attribute filters (with the exact
//! fallback for selective ones), recommend by example, leaving out bought items, hybrid
//! retrieval kept in step with catalogue writes, and diversity.

mod common;

use std::fmt::Write as _;

use common::{Fixture, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

async fn server_with(catalog: Option<&str>) -> (Fixture, TestServer) {
    let fixture = catalog.map(Fixture::with_catalog).unwrap_or_else(Fixture::new);
    fixture.index().await;
    let server = TestServer::start(&fixture.settings).await;
    (fixture, server)
}

async fn ids(server: &TestServer, request: Value) -> Vec<String> {
    let (status, body) = server.recommend(request).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_string()).collect()
}

async fn error_field(server: &TestServer, request: Value) -> String {
    let (status, body) = server.recommend(request).await;
    assert_eq!(status, 422, "{body}");
    body["error"]["field"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn filters_keep_matching_items_only() {
    let (_fixture, server) = server_with(None).await;
    let mut bolt = ids(&server, json!({"query": "tools", "filter": {"field": "brand", "eq": "Bolt"}})).await;
    bolt.sort();
    assert_eq!(bolt, vec!["6", "7"]);

    let mut priced = ids(&server, json!({"query": "anything", "filter": {"field": "price", "gte": 20, "lt": 100}})).await;
    priced.sort();
    assert_eq!(priced, vec!["3", "5", "6", "8"]);

    let combined = json!({"or": [{"field": "brand", "in": ["Nike", "Trail"]}, {"and": [{"field": "brand", "eq": "Acme"}, {"not": {"field": "price", "gt": 10}}]}]});
    let mut found = ids(&server, json!({"query": "anything", "filter": combined})).await;
    found.sort();
    assert_eq!(found, vec!["2", "3", "4"]);

    assert!(ids(&server, json!({"query": "anything", "filter": {"field": "colour", "eq": "red"}})).await.is_empty());
}

#[tokio::test]
async fn selective_filter_returns_exactly_k() {
    // 1,000 items; the filter keeps 1 % of them.
    let mut catalog = String::from("id,title,shard\n");
    for n in 0..1000 {
        writeln!(catalog, "p{n},product {n} {},{}", n * 7 % 13, n % 100).unwrap();
    }
    let (_fixture, server) = server_with(Some(&catalog)).await;
    let found = ids(&server, json!({"query": "product 5", "k": 10, "mode": "vector", "filter": {"field": "shard", "eq": 42}})).await;
    assert_eq!(found.len(), 10);
    assert!(found.iter().all(|id| id[1..].parse::<usize>().unwrap() % 100 == 42), "{found:?}");
    let found = ids(&server, json!({"query": "product 5", "k": 10, "mode": "hybrid", "filter": {"field": "shard", "eq": 42}})).await;
    assert_eq!(found.len(), 10);
}

#[tokio::test]
async fn malformed_filters_are_rejected() {
    let (_fixture, server) = server_with(None).await;
    assert_eq!(error_field(&server, json!({"query": "x", "filter": {"and": [{"field": "price"}]}})).await, "filter.and[0]");
    assert_eq!(error_field(&server, json!({"query": "x", "filter": {"field": "price", "gt": 1, "gte": 2}})).await, "filter");
    assert_eq!(error_field(&server, json!({"query": "x", "filter": {"field": "price", "between": [1, 2]}})).await, "filter.between");
}

#[tokio::test]
async fn positive_examples_steer_and_are_left_out() {
    let (_fixture, server) = server_with(None).await;
    // With the untrained head a text's query vector equals its item vector, so a positive
    // example alone ranks like its own title as a query, less the example itself.
    let by_text: Vec<String> = ids(&server, json!({"query": "Black hiking boots", "k": 4, "mode": "vector"})).await.into_iter().filter(|id| id != "4").collect();
    let by_example = ids(&server, json!({"positive": ["4"], "k": 3, "mode": "vector"})).await;
    assert_eq!(by_example, by_text[..3].to_vec());

    let weighted = ids(&server, json!({"query": "kettle", "positive": [{"id": "4", "weight": 3}], "negative": ["2"], "k": 8})).await;
    assert!(!weighted.contains(&"4".to_string()), "{weighted:?}");
    assert!(!weighted.contains(&"2".to_string()), "{weighted:?}");
    assert_eq!(weighted.len(), 6);
}

#[tokio::test]
async fn example_requests_need_a_direction() {
    let (_fixture, server) = server_with(None).await;
    assert_eq!(error_field(&server, json!({"k": 3})).await, "query");
    assert_eq!(error_field(&server, json!({"negative": ["2"]})).await, "negative");
    assert_eq!(error_field(&server, json!({"positive": ["no-such-item"]})).await, "positive[0].id");
    assert_eq!(error_field(&server, json!({"positive": [{"id": "4", "weight": 0}]})).await, "positive[0].weight");
    assert_eq!(error_field(&server, json!({"positive": ["4"], "explain": true})).await, "explain");
}

#[tokio::test]
async fn purchased_items_can_be_left_out() {
    let (_fixture, server) = server_with(None).await;
    let event = json!({"user_id": "u1", "item_id": "1", "event": "purchase"});
    assert_eq!(server.call(Method::POST, "/feedback", Some(event)).await.0, 200);

    let plain = ids(&server, json!({"query": "Red electric kettle", "k": 3, "mode": "vector"})).await;
    assert_eq!(plain[0], "1");
    let without = ids(&server, json!({"query": "Red electric kettle", "k": 3, "user_id": "u1", "exclude_purchased": true})).await;
    assert!(!without.contains(&"1".to_string()), "{without:?}");
    assert_eq!(without.len(), 3);
    let other_user = ids(&server, json!({"query": "Red electric kettle", "k": 3, "mode": "vector", "user_id": "u2", "exclude_purchased": true})).await;
    assert_eq!(other_user[0], "1");
    assert_eq!(error_field(&server, json!({"query": "kettle", "exclude_purchased": true})).await, "exclude_purchased");
}

#[tokio::test]
async fn hybrid_mode_follows_catalogue_writes() {
    let (_fixture, server) = server_with(None).await;
    assert_eq!(ids(&server, json!({"query": "hammer", "k": 3, "mode": "hybrid"})).await[0], "7");

    let (status, _) = server.call(Method::PUT, "/items/m1", Some(json!({"title": "Rubber mallet"}))).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&server, json!({"query": "mallet", "k": 3, "mode": "hybrid"})).await[0], "m1");
    server.call(Method::DELETE, "/items/m1", None).await;
    assert!(!ids(&server, json!({"query": "mallet", "k": 8, "mode": "hybrid"})).await.contains(&"m1".to_string()));
}

#[tokio::test]
async fn diversity_reranks_within_bounds() {
    let (_fixture, server) = server_with(None).await;
    let plain = ids(&server, json!({"query": "Cordless drill", "k": 4, "mode": "vector"})).await;
    let zero = ids(&server, json!({"query": "Cordless drill", "k": 4, "mode": "vector", "diversity": 0.0})).await;
    assert_eq!(plain, zero);
    let diverse = ids(&server, json!({"query": "Cordless drill", "k": 4, "mode": "vector", "diversity": 0.9})).await;
    assert_eq!(diverse[0], plain[0], "the most relevant item stays first");
    assert_eq!(diverse.len(), 4);
    assert_eq!(error_field(&server, json!({"query": "drill", "diversity": 1.5})).await, "diversity");
}
