//! Acknowledged writes survive SIGKILL and SIGTERM of `attnrec serve`, the index agrees with
//! the database after every restart, and concurrent writers and readers end in the state a
//! sequential replay of their acknowledged operations gives.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attnrec::catalog::ItemStore;
use attnrec::feedback::FeedbackLog;
use common::{ChildServer, Fixture, ServerView, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::json;

/// What the client knows was acknowledged: each item's text and whether it is live (false
/// once deleted), the number of feedback events, and the item whose write was in flight when
/// the server died.
#[derive(Default)]
struct Acknowledged {
    items: BTreeMap<String, (String, bool)>,
    feedback: u64,
    in_flight: Option<String>,
}

/// Writes items, deletes some of them and sends feedback, one request at a time, until a
/// request fails (the server was killed).
async fn write_until_failure(server: &ServerView, round: usize, acknowledged: Arc<Mutex<Acknowledged>>) {
    for n in 0.. {
        let id = format!("r{round}-{n}");
        let text = format!("crash {round} {n}");
        acknowledged.lock().unwrap().in_flight = Some(id.clone());
        let Ok(response) = server.client.put(server.url(&format!("/items/{id}"))).bearer_auth(common::API_KEY).json(&json!({"title": text})).send().await else { return };
        if response.status() != 200 {
            return;
        }
        acknowledged.lock().unwrap().items.insert(id.clone(), (text, true));

        if n % 4 == 3 {
            let victim = format!("r{round}-{}", n - 2);
            acknowledged.lock().unwrap().in_flight = Some(victim.clone());
            let Ok(response) = server.client.delete(server.url(&format!("/items/{victim}"))).bearer_auth(common::API_KEY).send().await else { return };
            if response.status() != 200 {
                return;
            }
            if let Some(entry) = acknowledged.lock().unwrap().items.get_mut(&victim) {
                entry.1 = false;
            }
        }
        acknowledged.lock().unwrap().in_flight = None;

        let event = json!({"user_id": "shopper", "query": "crash", "item_id": "1", "event": "click"});
        let Ok(response) = server.client.post(server.url("/feedback")).bearer_auth(common::API_KEY).json(&event).send().await else { return };
        if response.status() != 200 {
            return;
        }
        acknowledged.lock().unwrap().feedback += 1;
    }
}

/// Checks that every acknowledged write is in the database and that the index contains exactly
/// the stored items: each live item is found first by its own text, no deleted one is found.
async fn check_state(fixture: &Fixture, server: &ChildServer, acknowledged: &Acknowledged) {
    let store = ItemStore::open(&fixture.settings.data_dir.join("catalog.db")).await.unwrap();
    let stored = store.count().await.unwrap();
    let (_, ready) = server.call(Method::GET, "/ready", None).await;
    assert_eq!(ready["items"].as_u64(), Some(stored), "the index and the database disagree");
    let feedback = FeedbackLog::new(store, &fixture.settings.feedback).count().await.unwrap();
    assert!(feedback >= acknowledged.feedback, "{feedback} feedback events stored, {} acknowledged", acknowledged.feedback);

    for (id, (text, live)) in &acknowledged.items {
        if acknowledged.in_flight.as_deref() == Some(id.as_str()) {
            continue;
        }
        let (status, item) = server.call(Method::GET, &format!("/items/{id}"), None).await;
        let (_, found) = server.call(Method::POST, "/recommend", Some(json!({"query": text, "k": 5, "mode": "vector"}))).await;
        let found: Vec<&str> = found["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap()).collect();
        if *live {
            assert_eq!((status, item["text"].as_str()), (200, Some(text.as_str())), "acknowledged item {id} lost");
            assert_eq!(found.first(), Some(&id.as_str()), "item {id} is not first for its own text");
        } else {
            assert_eq!(status, 404, "deleted item {id} came back");
            assert!(!found.contains(&id.as_str()), "deleted item {id} is still searchable");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_sigkill() {
    let fixture = Fixture::new();
    fixture.index().await;
    let mut rng = StdRng::seed_from_u64(2026);
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    // A one-second snapshot interval makes some kills land after a snapshot and some before.
    let settings = [("ATTNREC_INDEX__SNAPSHOT_INTERVAL_S", "1")];

    for round in 0..4 {
        let server = ChildServer::start(&fixture, &settings);
        server.wait_ready().await;
        let writer = tokio::spawn({
            let (client, address) = (server.client.clone(), server.address.clone());
            let acknowledged = acknowledged.clone();
            async move {
                let view = ChildServer::view(client, address);
                write_until_failure(&view, round, acknowledged).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..2500))).await;
        server.kill();
        writer.await.unwrap();

        let restarted = ChildServer::start(&fixture, &settings);
        restarted.wait_ready().await;
        let mut acknowledged = acknowledged.lock().unwrap();
        assert!(acknowledged.items.keys().any(|id| id.starts_with(&format!("r{round}-"))), "round {round} acknowledged no write");
        check_state(&fixture, &restarted, &acknowledged).await;

        // The write in flight at the kill may or may not have committed. Later rounds expect
        // what the restarted server reports for it.
        if let Some(id) = acknowledged.in_flight.take() {
            let (status, item) = restarted.call(Method::GET, &format!("/items/{id}"), None).await;
            let text = item["text"].as_str().map(str::to_string);
            match (status, text) {
                (200, Some(text)) => {
                    acknowledged.items.insert(id, (text, true));
                }
                _ => {
                    if let Some(entry) = acknowledged.items.get_mut(&id) {
                        entry.1 = false;
                    }
                }
            }
        }
        eprintln!("round {round}: {} items and {} feedback events acknowledged so far", acknowledged.items.len(), acknowledged.feedback);
        drop(acknowledged);
        restarted.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let fixture = Fixture::new();
    fixture.index().await;
    // No periodic snapshot: the one written at shutdown must carry every write.
    let settings = [("ATTNREC_INDEX__SNAPSHOT_INTERVAL_S", "0")];
    let server = ChildServer::start(&fixture, &settings);
    server.wait_ready().await;

    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let finished_after_signal = Arc::new(Mutex::new(0usize));
    let signal_sent = Arc::new(Mutex::new(None::<Instant>));
    let mut clients = Vec::new();
    for client_number in 0..8 {
        let (client, address) = (server.client.clone(), server.address.clone());
        let (acknowledged, finished_after_signal, signal_sent) = (acknowledged.clone(), finished_after_signal.clone(), signal_sent.clone());
        clients.push(tokio::spawn(async move {
            let view = ChildServer::view(client, address);
            for n in 0.. {
                let items: Vec<_> = (0..20).map(|m| json!({"id": format!("t{client_number}-{n}-{m}"), "title": format!("term {client_number} {n} {m}")})).collect();
                let started = Instant::now();
                let Ok(response) = view.client.post(view.url("/items/batch")).bearer_auth(common::API_KEY).json(&json!({"items": items})).send().await else { return };
                let status = response.status().as_u16();
                assert!(status == 200 || status == 503, "a request during shutdown got {status}");
                if status != 200 {
                    return;
                }
                if signal_sent.lock().unwrap().is_some_and(|sent| started < sent) {
                    *finished_after_signal.lock().unwrap() += 1;
                }
                let mut acknowledged = acknowledged.lock().unwrap();
                for m in 0..20 {
                    acknowledged.items.insert(format!("t{client_number}-{n}-{m}"), (format!("term {client_number} {n} {m}"), true));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    *signal_sent.lock().unwrap() = Some(Instant::now());
    server.terminate();
    for client in clients {
        client.await.unwrap();
    }
    let status = server.wait();
    assert!(status.success(), "serve exited with {status}");
    assert!(*finished_after_signal.lock().unwrap() > 0, "no request in flight at SIGTERM was answered");

    // The shutdown snapshot contains every write, so the restart has nothing to replay.
    let store = ItemStore::open(&fixture.settings.data_dir.join("catalog.db")).await.unwrap();
    let snapshot = attnrec::catalog::SnapshotRecord::read(&fixture.settings.data_dir).unwrap();
    assert_eq!(snapshot.seq, store.last_seq().await.unwrap());
    drop(store);
    let restarted = ChildServer::start(&fixture, &settings);
    restarted.wait_ready().await;
    let acknowledged = acknowledged.lock().unwrap();
    assert!(acknowledged.items.len() >= 20);
    check_state(&fixture, &restarted, &acknowledged).await;
    drop(acknowledged);
    restarted.kill();
}

/// One acknowledged operation of the concurrency test, ordered by its sequence number.
enum Operation {
    Upsert(String, String),
    Delete(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_match_replay() {
    let seconds: u64 = std::env::var("ATTNREC_TEST_STRESS_SECONDS").ok().and_then(|value| value.parse().ok()).unwrap_or(30);
    let fixture = Fixture::new();
    fixture.index().await;
    let server = Arc::new(TestServer::start(&fixture.settings).await);
    let log = Arc::new(Mutex::new(Vec::<(u64, Operation)>::new()));
    let deadline = Instant::now() + Duration::from_secs(seconds);

    let mut clients = Vec::new();
    for client_number in 0..32u64 {
        let (server, log) = (server.clone(), log.clone());
        clients.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(client_number);
            let mut requests = 0u64;
            while Instant::now() < deadline {
                requests += 1;
                // Forty shared ids, so clients overwrite and delete each other's items.
                let id = format!("c{}", rng.random_range(0..40));
                match rng.random_range(0..10) {
                    0..=3 => {
                        let text = format!("shared {client_number} {requests}");
                        let (status, body) = server.call(Method::PUT, &format!("/items/{id}"), Some(json!({"title": text}))).await;
                        assert_eq!(status, 200, "{body}");
                        log.lock().unwrap().push((body["seq"].as_u64().unwrap(), Operation::Upsert(id, text)));
                    }
                    4 => {
                        let (status, body) = server.call(Method::DELETE, &format!("/items/{id}"), None).await;
                        assert!(status == 200 || status == 404, "{status} {body}");
                        if status == 200 {
                            log.lock().unwrap().push((body["seq"].as_u64().unwrap(), Operation::Delete(id)));
                        }
                    }
                    5 => {
                        let (status, _) = server.call(Method::GET, &format!("/items/{id}"), None).await;
                        assert!(status == 200 || status == 404);
                    }
                    _ => {
                        let (status, body) = server.recommend(json!({"query": format!("shared {}", rng.random_range(0..32)), "k": 10})).await;
                        assert_eq!(status, 200, "{body}");
                    }
                }
            }
            requests
        }));
    }
    let mut requests = 0;
    for client in clients {
        requests += client.await.unwrap();
    }

    let mut operations = std::mem::take(&mut *log.lock().unwrap());
    operations.sort_by_key(|(seq, _)| *seq);
    assert!(operations.windows(2).all(|pair| pair[0].0 < pair[1].0), "two acknowledged writes share a sequence number");
    let mut expected: HashMap<String, Option<String>> = HashMap::new();
    for (_, operation) in operations {
        match operation {
            Operation::Upsert(id, text) => expected.insert(id, Some(text)),
            Operation::Delete(id) => expected.insert(id, None),
        };
    }
    for (id, text) in &expected {
        let (status, item) = server.call(Method::GET, &format!("/items/{id}"), None).await;
        match text {
            Some(text) => assert_eq!((status, item["text"].as_str()), (200, Some(text.as_str())), "item {id}"),
            None => assert_eq!(status, 404, "item {id} should be deleted"),
        }
    }
    let live = expected.values().filter(|text| text.is_some()).count() + 8;
    let (_, ready) = server.call(Method::GET, "/ready", None).await;
    assert_eq!(ready["items"].as_u64(), Some(live as u64), "the index contains other items than the database");
    eprintln!("{requests} requests from 32 clients in {seconds} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_omit_keys_and_queries() {
    let fixture = Fixture::new();
    fixture.index().await;
    let server = ChildServer::start(&fixture, &[]);
    server.wait_ready().await;
    let secret_query = "zebra quilt for grandmother";
    server.call(Method::POST, "/recommend", Some(json!({"query": secret_query}))).await;
    server.call(Method::PUT, "/items/log-1", Some(json!({"title": "Linen shirt"}))).await;
    server.call(Method::POST, "/feedback", Some(json!({"user_id": "shopper-77", "query": secret_query, "item_id": "log-1", "event": "click"}))).await;
    let wrong_key = server.client.put(server.url("/items/log-2")).bearer_auth("wrong-key-9f3a").json(&json!({"title": "x"})).send().await.unwrap();
    assert_eq!(wrong_key.status().as_u16(), 401);
    server.terminate();
    let log = server.log.clone();
    assert!(server.wait().success());

    let log = log.lock().unwrap().join("\n");
    assert!(log.contains("request finished"), "the server logged no requests: {log}");
    for secret in [common::API_KEY, "wrong-key-9f3a", secret_query, "shopper-77"] {
        assert!(!log.contains(secret), "{secret:?} appears in the log");
    }
}
