//! Every write endpoint against malformed, oversized, mistyped and unauthorised requests: each
//! gets its documented 4xx JSON error naming the field, and the database is left unchanged.

mod common;

use attnrec::catalog::ItemStore;
use attnrec::feedback::FeedbackLog;
use common::{Fixture, TestServer, API_KEY};
use serde_json::{json, Value};

/// One bad request: method, path, raw body, the status and error field it must get.
struct Case {
    method: &'static str,
    path: String,
    body: Vec<u8>,
    status: u16,
    field: Option<&'static str>,
}

fn case(method: &'static str, path: &str, body: Value, status: u16, field: Option<&'static str>) -> Case {
    Case { method, path: path.to_string(), body: body.to_string().into_bytes(), status, field }
}

fn raw(method: &'static str, path: &str, body: &[u8], status: u16) -> Case {
    Case { method, path: path.to_string(), body: body.to_vec(), status, field: None }
}

fn cases() -> Vec<Case> {
    let long_id = "x".repeat(129);
    let many_items: Vec<Value> = (0..101).map(|n| json!({"id": format!("m{n}"), "title": "t"})).collect();
    let many_events: Vec<Value> = (0..1001).map(|_| json!({"item_id": "1", "event": "click"})).collect();
    vec![
        // PUT /items/{id}
        case("PUT", "/items/n1", json!({}), 422, Some("title")),
        case("PUT", "/items/n1", json!({"title": 5}), 422, Some("title")),
        case("PUT", "/items/n1", json!({"title": ""}), 422, Some("title")),
        case("PUT", "/items/n1", json!({"title": "   "}), 422, Some("title")),
        case("PUT", "/items/n1", json!({"title": "x".repeat(10_001)}), 422, Some("title")),
        case("PUT", "/items/n1", json!({"title": "a\u{0}b"}), 422, Some("title")),
        case("PUT", "/items/n1", json!({"title": "ok", "text": ""}), 422, Some("text")),
        case("PUT", "/items/n1", json!({"title": "ok", "colour": "red"}), 422, Some("colour")),
        case("PUT", "/items/n1", json!({"title": "ok", "attributes": []}), 422, Some("attributes")),
        case("PUT", "/items/n1", json!({"title": "ok", "attributes": {"size": {"eu": 42}}}), 422, Some("attributes.size")),
        case("PUT", "/items/n1", json!([1, 2]), 422, None),
        raw("PUT", "/items/n1", br#"{"title": "ok", "attributes": {"price": NaN}}"#, 400),
        raw("PUT", "/items/n1", br#"{"title": "ok", "attributes": {"price": Infinity}}"#, 400),
        raw("PUT", "/items/n1", br#"{"title": "\ud800"}"#, 400),
        raw("PUT", "/items/n1", b"{\"title\": \"\xff\xfe\"}", 400),
        raw("PUT", "/items/n1", b"", 400),
        case("PUT", "/items/a%2Fb", json!({"title": "ok"}), 422, Some("id")),
        case("PUT", "/items/a%00b", json!({"title": "ok"}), 422, Some("id")),
        case("PUT", "/items/a%20b", json!({"title": "ok"}), 422, Some("id")),
        case("PUT", &format!("/items/{long_id}"), json!({"title": "ok"}), 422, Some("id")),
        case("PUT", "/items/n1", json!({"title": "y".repeat(70_000)}), 413, None),
        // POST /items/batch
        case("POST", "/items/batch", json!({"items": []}), 422, Some("items")),
        case("POST", "/items/batch", json!({"items": many_items}), 422, Some("items")),
        case("POST", "/items/batch", json!({"items": "none"}), 422, Some("items")),
        case("POST", "/items/batch", json!({"items": [{"id": "d1", "title": "a"}, {"id": "d1", "title": "b"}]}), 422, Some("items[1].id")),
        case("POST", "/items/batch", json!({"items": [{"id": "ok1", "title": "a"}, {"id": "a/b", "title": "b"}]}), 422, Some("items[1].id")),
        case("POST", "/items/batch", json!({"items": [{"title": "a"}]}), 422, Some("items[0].id")),
        case("POST", "/items/batch", json!({"items": [{"id": "ok1", "title": 3}]}), 422, Some("items[0].title")),
        case("POST", "/items/batch", json!({"items": [{"id": "ok1", "title": "a", "attributes": {"tags": ["x", {"y": 1}]}}]}), 422, Some("items[0].attributes.tags[1]")),
        // DELETE /items/{id}
        case("DELETE", "/items/a%2Fb", json!(null), 422, Some("id")),
        case("DELETE", "/items/missing", json!(null), 404, None),
        // POST /feedback
        case("POST", "/feedback", json!({}), 422, Some("item_id")),
        case("POST", "/feedback", json!({"item_id": "1"}), 422, Some("event")),
        case("POST", "/feedback", json!({"item_id": "1", "event": "view"}), 422, Some("event")),
        case("POST", "/feedback", json!({"item_id": "1", "event": "click", "value": "high"}), 422, Some("value")),
        case("POST", "/feedback", json!({"item_id": "1", "event": "click", "value": 1e300}), 422, Some("value")),
        case("POST", "/feedback", json!({"item_id": "1", "event": "click", "timestamp": "yesterday"}), 422, Some("timestamp")),
        case("POST", "/feedback", json!({"item_id": "1", "event": "click", "timestamp": true}), 422, Some("timestamp")),
        case("POST", "/feedback", json!({"item_id": "1", "event": "click", "timestamp": 9e12}), 422, Some("timestamp")),
        case("POST", "/feedback", json!({"item_id": "1", "event": "click", "user_id": ""}), 422, Some("user_id")),
        case("POST", "/feedback", json!({"item_id": "1", "event": "click", "user_id": "u\u{1b}[31m"}), 422, Some("user_id")),
        case("POST", "/feedback", json!({"item_id": "1", "event": "click", "query": "q".repeat(2001)}), 422, Some("query")),
        case("POST", "/feedback", json!({"item_id": "no-such-item", "event": "click"}), 422, Some("item_id")),
        case("POST", "/feedback", json!({"item_id": "1/2", "event": "click"}), 422, Some("item_id")),
        case("POST", "/feedback", json!({"item_id": "1", "event": "click", "source": "web"}), 422, Some("source")),
        raw("POST", "/feedback", br#"{"item_id": "1", "event": "click", "value": -Infinity}"#, 400),
        // POST /feedback/batch
        case("POST", "/feedback/batch", json!({"events": []}), 422, Some("events")),
        case("POST", "/feedback/batch", json!({"events": many_events}), 422, Some("events")),
        case("POST", "/feedback/batch", json!({"events": [{"item_id": "1", "event": "click"}, {"item_id": "1", "event": "nope"}]}), 422, Some("events[1].event")),
        case("POST", "/feedback/batch", json!({"events": [{"item_id": "1", "event": "click"}, {"item_id": "ghost", "event": "click"}]}), 422, Some("events[1].item_id")),
    ]
}

/// Returns the state compared before and after: items, the change log and the feedback log.
async fn state(fixture: &Fixture) -> (u64, u64, u64, Value) {
    let store = ItemStore::open(&fixture.settings.data_dir.join("catalog.db")).await.unwrap();
    let item = store.get_item("1").await.unwrap().map(|item| json!([item.title, item.text, item.attributes, item.seq]));
    let feedback = FeedbackLog::new(store.clone(), &fixture.settings.feedback).count().await.unwrap();
    (store.count().await.unwrap(), store.last_seq().await.unwrap(), feedback, item.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_writes_rejected_without_changes() {
    let fixture = Fixture::new();
    fixture.index().await;
    let server = TestServer::start(&fixture.settings).await;
    let before = state(&fixture).await;

    for case in cases() {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let response = server
            .client
            .request(method, server.url(&case.path))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(case.body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let label = format!("{} {} {}", case.method, case.path.chars().take(40).collect::<String>(), String::from_utf8_lossy(&case.body).chars().take(80).collect::<String>());
        assert_eq!(status, case.status, "{label}: {body}");
        assert!(body["error"]["code"].is_string(), "{label}: {body}");
        assert!(body["error"]["message"].is_string(), "{label}: {body}");
        assert_eq!(body["error"]["field"].as_str(), case.field, "{label}: {body}");
    }

    for (method, path) in [("PUT", "/items/n1"), ("POST", "/items/batch"), ("DELETE", "/items/1"), ("POST", "/feedback"), ("POST", "/feedback/batch")] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let body = json!({"title": "ok", "items": [], "events": [], "item_id": "1", "event": "click"});
        for key in [None, Some("wrong-key"), Some("")] {
            let mut request = server.client.request(method.clone(), server.url(path)).json(&body);
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 401, "{method} {path} with key {key:?}");
        }
        if method != reqwest::Method::DELETE {
            let no_content_type = server.client.request(method.clone(), server.url(path)).bearer_auth(API_KEY).body("{}").send().await.unwrap();
            assert_eq!(no_content_type.status().as_u16(), 415, "{method} {path}");
        }
    }

    assert_eq!(state(&fixture).await, before, "a rejected request changed the database");
}
