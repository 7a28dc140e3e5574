//! Two replicas of `attnrec serve` over one PostgreSQL catalogue: writes through one replica
//! reach the other's index, a replica that was down catches up before it reports ready, and
//! concurrent writes of one id converge on the last committed write. Needs a PostgreSQL server
//! (ATTNREC_TEST_POSTGRES_URL, set by scripts/with-postgres.sh); without one the tests return
//! early with a message.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{ChildServer, Fixture};
use reqwest::Method;
use serde_json::json;

/// How soon a write through one replica must be searchable on the other.
const REPLICATION_DEADLINE: Duration = Duration::from_secs(1);

/// A fixture indexed into a fresh PostgreSQL database, and the settings that point replicas at it.
struct SharedCatalogue {
    fixture: Fixture,
    storage_url: String,
}

impl SharedCatalogue {
    async fn new() -> Option<Self> {
        let Some(storage_url) = attnrec::testing::postgres_test_database().await else {
            eprintln!("{} is unset, so the replication tests are skipped", attnrec::testing::TEST_POSTGRES_URL_VAR);
            return None;
        };
        let mut fixture = Fixture::new();
        fixture.settings.storage.url = storage_url.clone();
        fixture.index().await;
        Some(Self { fixture, storage_url })
    }

    /// Creates a second data directory from a copy of the first one's files, lock excluded.
    fn copy_data_dir(&self, name: &str) -> std::path::PathBuf {
        let copy = self.fixture.path(name);
        std::fs::create_dir_all(&copy).unwrap();
        for entry in std::fs::read_dir(self.fixture.path("data")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() && entry.file_name() != attnrec::catalog::LOCK_FILE {
                std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
            }
        }
        copy
    }

    async fn start(&self, data_dir: &Path) -> ChildServer {
        self.start_with(data_dir, &[]).await
    }

    /// Starts a replica with more `ATTNREC_` settings and waits until it is ready.
    async fn start_with(&self, data_dir: &Path, extra: &[(&str, &str)]) -> ChildServer {
        let mut settings = vec![("ATTNREC_STORAGE__URL", self.storage_url.as_str()), ("ATTNREC_STORAGE__POLL_INTERVAL_MS", "200")];
        settings.extend_from_slice(extra);
        let server = ChildServer::start_in(&self.fixture, data_dir, &settings);
        server.wait_ready().await;
        server
    }
}

/// Returns the ids that a vector search for `text` returns on `server`, best first.
async fn search(server: &ChildServer, text: &str) -> Vec<String> {
    let (status, body) = server.call(Method::POST, "/recommend", Some(json!({"query": text, "k": 5, "mode": "vector"}))).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_string()).collect()
}

/// Polls `server` until the best hit for `text` is `id` (or, with `None`, until `absent` is
/// not among the hits), failing after `deadline`.
async fn wait_for_search(server: &ChildServer, text: &str, expected: Option<&str>, absent: &str, deadline: Duration) {
    let started = Instant::now();
    loop {
        let found = search(server, text).await;
        let done = match expected {
            Some(id) => found.first().map(String::as_str) == Some(id),
            None => !found.iter().any(|id| id == absent),
        };
        if done {
            return;
        }
        assert!(started.elapsed() < deadline, "after {:?}, searching {text:?} returns {found:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn put(server: &ChildServer, id: &str, title: &str) -> serde_json::Value {
    let (status, body) = server.call(Method::PUT, &format!("/items/{id}"), Some(json!({"title": title}))).await;
    assert_eq!(status, 200, "{body}");
    body
}

impl SharedCatalogue {
    /// Returns the replica's vector count and the shared catalogue's item count.
    async fn index_and_catalogue_sizes(&self, server: &ChildServer) -> (u64, u64) {
        let (_, ready) = server.call(Method::GET, "/ready", None).await;
        let store = attnrec::catalog::ItemStore::connect(&self.fixture.settings.storage, &self.fixture.path("data")).await.unwrap();
        (ready["items"].as_u64().unwrap(), store.count().await.unwrap())
    }

    /// Polls until the replica's index has as many vectors as the catalogue has items and its
    /// metrics show no replication lag, failing after `deadline`.
    async fn wait_until_caught_up(&self, server: &ChildServer, deadline: Duration) {
        let started = Instant::now();
        loop {
            let (vectors, items) = self.index_and_catalogue_sizes(server).await;
            let metrics = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
            let lag_free = metrics.contains("attnrec_replication_lag_changes 0") && metrics.contains("attnrec_replication_lag_seconds 0");
            if vectors == items && lag_free {
                return;
            }
            assert!(started.elapsed() < deadline, "after {:?}: {vectors} vectors for {items} items, lag free: {lag_free}", started.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn upsert_and_delete_reach_other_replica() {
    let Some(shared) = SharedCatalogue::new().await else { return };
    let replica_b_dir = shared.copy_data_dir("data-b");
    let replica_a = shared.start(&shared.fixture.path("data")).await;
    let replica_b = shared.start(&replica_b_dir).await;

    put(&replica_a, "sku-9", "Green hiking jacket").await;
    wait_for_search(&replica_b, "Green hiking jacket", Some("sku-9"), "", REPLICATION_DEADLINE).await;
    let (status, item) = replica_b.call(Method::GET, "/items/sku-9", None).await;
    assert_eq!(status, 200);
    assert_eq!(item["title"], "Green hiking jacket");

    let (status, _) = replica_a.call(Method::DELETE, "/items/sku-9", None).await;
    assert_eq!(status, 200);
    wait_for_search(&replica_b, "Green hiking jacket", None, "sku-9", REPLICATION_DEADLINE).await;
    let (status, _) = replica_b.call(Method::GET, "/items/sku-9", None).await;
    assert_eq!(status, 404);
    // Searches drop deleted items at once; the index itself loses the vector when the
    // follower applies the delete.
    shared.wait_until_caught_up(&replica_b, REPLICATION_DEADLINE).await;

    let metrics = replica_b.client.get(replica_b.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("attnrec_replication_delay_seconds_count 2"), "{metrics}");
}

#[tokio::test]
async fn restarted_replica_catches_up() {
    let Some(shared) = SharedCatalogue::new().await else { return };
    let replica_b_dir = shared.copy_data_dir("data-b");
    let replica_a = shared.start(&shared.fixture.path("data")).await;
    let replica_b = shared.start(&replica_b_dir).await;
    put(&replica_a, "sku-10", "Orange garden chair").await;
    wait_for_search(&replica_b, "Orange garden chair", Some("sku-10"), "", REPLICATION_DEADLINE).await;
    replica_b.kill();

    put(&replica_a, "sku-11", "Yellow glass bottle").await;
    put(&replica_a, "sku-10", "Orange wood table").await;
    let (status, _) = replica_a.call(Method::DELETE, "/items/3", None).await;
    assert_eq!(status, 200);

    // Ready means caught up: no waiting after the restart.
    let replica_b = shared.start(&replica_b_dir).await;
    assert_eq!(search(&replica_b, "Yellow glass bottle").await.first().map(String::as_str), Some("sku-11"));
    assert_eq!(search(&replica_b, "Orange wood table").await.first().map(String::as_str), Some("sku-10"));
    assert!(!search(&replica_b, "Nike running shoes").await.contains(&"3".to_string()));
    let (vectors, items) = shared.index_and_catalogue_sizes(&replica_b).await;
    assert_eq!(vectors, items, "replica B's index and the catalogue disagree");
    assert_eq!(shared.index_and_catalogue_sizes(&replica_a).await.0, items, "replica A's index and the catalogue disagree");
}

#[tokio::test]
async fn concurrent_writes_converge_on_last() {
    let Some(shared) = SharedCatalogue::new().await else { return };
    let replica_b_dir = shared.copy_data_dir("data-b");
    let replica_a = shared.start(&shared.fixture.path("data")).await;
    let replica_b = shared.start(&replica_b_dir).await;

    // Each round writes the same id through both replicas at once, with different texts.
    let mut acknowledged = Vec::new();
    for round in 0..10 {
        let title_a = format!("Red kettle round {round} from a");
        let title_b = format!("Blue mug round {round} from b");
        let (from_a, from_b) = tokio::join!(put(&replica_a, "shared", &title_a), put(&replica_b, "shared", &title_b));
        acknowledged.push((from_a["seq"].as_u64().unwrap(), title_a));
        acknowledged.push((from_b["seq"].as_u64().unwrap(), title_b));
    }
    let (_, last_title) = acknowledged.iter().max_by_key(|(seq, _)| *seq).unwrap().clone();

    for replica in [&replica_a, &replica_b] {
        let (status, item) = replica.call(Method::GET, "/items/shared", None).await;
        assert_eq!(status, 200);
        assert_eq!(item["title"].as_str(), Some(last_title.as_str()), "the stored item is not the last committed write");
        wait_for_search(replica, &last_title, Some("shared"), "", REPLICATION_DEADLINE).await;
    }
    // Vectors of the overwritten texts leave the index once the follower has applied the log.
    shared.wait_until_caught_up(&replica_a, REPLICATION_DEADLINE).await;
    shared.wait_until_caught_up(&replica_b, REPLICATION_DEADLINE).await;
}

#[tokio::test]
async fn new_replica_starts_from_shared_snapshot() {
    let Some(shared) = SharedCatalogue::new().await else { return };
    let snapshot_dir = shared.fixture.path("snapshots");
    let settings = [("ATTNREC_STORAGE__SNAPSHOT_DIR", snapshot_dir.to_str().unwrap()), ("ATTNREC_INDEX__SNAPSHOT_INTERVAL_S", "1")];
    let replica_a = shared.start_with(&shared.fixture.path("data"), &settings).await;
    let written = put(&replica_a, "sku-20", "Black leather bag").await["seq"].as_u64().unwrap();

    // Replica A saves and publishes a snapshot every second.
    let deadline = Instant::now() + Duration::from_secs(20);
    while attnrec::catalog::SnapshotRecord::read(&snapshot_dir).unwrap().seq < written {
        assert!(Instant::now() < deadline, "replica A never published a snapshot with change {written}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    put(&replica_a, "sku-21", "White cotton shirt").await;

    // An empty data directory: everything comes from the shared snapshot and the change log.
    let replica_b = shared.start_with(&shared.fixture.path("data-new"), &settings).await;
    assert_eq!(search(&replica_b, "Black leather bag").await.first().map(String::as_str), Some("sku-20"));
    assert_eq!(search(&replica_b, "White cotton shirt").await.first().map(String::as_str), Some("sku-21"));
    let (vectors, items) = shared.index_and_catalogue_sizes(&replica_b).await;
    assert_eq!(vectors, items, "replica B's index and the catalogue disagree");

    let log = replica_b.log.lock().unwrap().join("\n");
    assert!(log.contains("data directory restored from the shared snapshot"), "{log}");
    assert!(!log.contains("rebuilding it"), "replica B embedded the whole catalogue: {log}");
}
