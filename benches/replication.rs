//! Two replicas over one PostgreSQL catalogue: the replication delay at a steady rate of
//! catalogue writes, and read throughput with one replica against two. Uses the real
//! all-MiniLM-L6-v2 and the first `ATTNREC_BENCH_ITEMS` (1000) books of the demo catalogue.
//!
//! Run, after `scripts/fetch-models.sh`:
//!   scripts/with-postgres.sh cargo bench --profile dev --bench replication
//! `ATTNREC_BENCH_WRITES_PER_SECOND` (100), `ATTNREC_BENCH_SECONDS` (20 per phase) and
//! `ATTNREC_BENCH_CLIENTS` (16 concurrent readers) change the load.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const API_KEY: &str = "bench-key-replication";

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).map(|value| value.parse().unwrap_or_else(|_| panic!("{name} is a whole number"))).unwrap_or(default)
}

/// `attnrec serve` on a loopback port, killed when dropped.
struct Replica {
    child: Child,
    address: String,
}

impl Replica {
    fn start(data_dir: &Path, storage_url: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_attnrec"))
            .args(["serve", "--data-dir", data_dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .env("ATTNREC_STORAGE__URL", storage_url)
            .env("ATTNREC_AUTH__API_KEYS", API_KEY)
            .env("RUST_LOG", "warn,attnrec::commands=info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("attnrec serve starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let address = loop {
            let line = lines.next().expect("serve exited before listening").unwrap();
            if let Some(rest) = line.split("address=").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, address }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    async fn metric(&self, client: &reqwest::Client, prefix: &str) -> Vec<(String, f64)> {
        let text = client.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit_once(' ').map(|(name, value)| (name.to_string(), value.parse().unwrap())))
            .collect()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns the upper bound of the histogram bucket that contains the `quantile`, from the
/// cumulative `_bucket` lines of one Prometheus histogram.
fn bucket_quantile(buckets: &[(String, f64)], quantile: f64) -> String {
    let total = buckets.last().map(|(_, count)| *count).unwrap_or(0.0);
    let (name, _) = buckets.iter().find(|(_, count)| *count >= quantile * total).expect("a bucket reaches every quantile");
    name.split("le=\"").nth(1).unwrap().trim_end_matches("\"}").to_string()
}

fn percentile(sorted: &[Duration], quantile: f64) -> f64 {
    sorted[((sorted.len() as f64 * quantile) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Sends recommendations from `clients` tasks to the replicas in turn for `seconds`, and
/// prints the throughput and latency.
async fn read_load(label: &str, replicas: &[&Replica], queries: &[String], clients: usize, seconds: u64) {
    let client = reqwest::Client::new();
    let urls: Vec<String> = replicas.iter().map(|replica| replica.url("/recommend")).collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..clients {
        let (client, urls, queries) = (client.clone(), urls.clone(), queries.to_vec());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0;
            let mut n = worker;
            while Instant::now() < deadline {
                let body = serde_json::json!({"query": queries[n % queries.len()], "k": 10});
                let started = Instant::now();
                match client.post(&urls[n % urls.len()]).json(&body).send().await {
                    Ok(response) if response.status() == 200 => latencies.push(started.elapsed()),
                    _ => failures += 1,
                }
                n += clients;
            }
            (latencies, failures)
        });
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    while let Some(done) = tasks.join_next().await {
        let (worker_latencies, worker_failures) = done.unwrap();
        latencies.extend(worker_latencies);
        failures += worker_failures;
    }
    latencies.sort();
    println!(
        "reads, {label}: {:.1} requests/s, p50 {:.0} ms, p99 {:.0} ms, {failures} failed ({clients} clients, {seconds} s)",
        latencies.len() as f64 / seconds as f64,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
}

#[tokio::main]
async fn main() {
    let storage_url = attnrec::testing::postgres_test_database().await.expect("set ATTNREC_TEST_POSTGRES_URL: run through scripts/with-postgres.sh");
    let items = setting("ATTNREC_BENCH_ITEMS", 1000) as usize;
    let writes_per_second = setting("ATTNREC_BENCH_WRITES_PER_SECOND", 100);
    let seconds = setting("ATTNREC_BENCH_SECONDS", 20);
    let clients = setting("ATTNREC_BENCH_CLIENTS", 16) as usize;

    let work = tempfile::tempdir().unwrap();
    let repository = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let demo = std::fs::read_to_string(repository.join("data/goodbooks-10k.csv")).unwrap();
    let catalogue: Vec<&str> = demo.lines().take(items + 1).collect();
    std::fs::write(work.path().join("books.csv"), catalogue.join("\n")).unwrap();
    let queries: Vec<String> = catalogue[1..].iter().filter_map(|line| line.split(',').nth(1)).map(|title| title.trim_matches('"').to_string()).collect();

    let data_a = work.path().join("a");
    let status = Command::new(env!("CARGO_BIN_EXE_attnrec"))
        .args(["index", "--catalog", work.path().join("books.csv").to_str().unwrap(), "--data-dir", data_a.to_str().unwrap()])
        .env("ATTNREC_STORAGE__URL", &storage_url)
        .status()
        .unwrap();
    assert!(status.success(), "attnrec index failed");
    let data_b = work.path().join("b");
    std::fs::create_dir_all(&data_b).unwrap();
    for name in ["manifest.json", "items.usearch", "snapshot.json"] {
        std::fs::copy(data_a.join(name), data_b.join(name)).unwrap();
    }

    let replica_a = Replica::start(&data_a, &storage_url);
    let replica_b = Replica::start(&data_b, &storage_url);
    let client = reqwest::Client::new();
    for replica in [&replica_a, &replica_b] {
        while client.get(replica.url("/ready")).send().await.map(|response| response.status() != 200).unwrap_or(true) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Writes alternate between the replicas at a fixed rate while the lag gauges are sampled.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let urls = [replica_a.url("/metrics"), replica_b.url("/metrics")];
        let client = client.clone();
        tokio::spawn(async move {
            let mut max_lag_seconds: f64 = 0.0;
            let mut max_lag_changes: f64 = 0.0;
            while sampling.load(Ordering::Relaxed) {
                for url in &urls {
                    let text = client.get(url).send().await.unwrap().text().await.unwrap();
                    for line in text.lines() {
                        if let Some(value) = line.strip_prefix("attnrec_replication_lag_seconds ") {
                            max_lag_seconds = max_lag_seconds.max(value.parse().unwrap());
                        }
                        if let Some(value) = line.strip_prefix("attnrec_replication_lag_changes ") {
                            max_lag_changes = max_lag_changes.max(value.parse().unwrap());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (max_lag_seconds, max_lag_changes)
        })
    };
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / writes_per_second as f64));
    let mut writes = tokio::task::JoinSet::new();
    let total = writes_per_second * seconds;
    let started = Instant::now();
    for n in 0..total {
        ticks.tick().await;
        let replica = if n % 2 == 0 { &replica_a } else { &replica_b };
        let request = client.put(replica.url(&format!("/items/bench-{n}"))).bearer_auth(API_KEY).json(&serde_json::json!({"title": format!("Benchmark book number {n}")}));
        writes.spawn(async move { request.send().await.map(|response| response.status() == 200).unwrap_or(false) });
    }
    let mut acknowledged = 0;
    while let Some(done) = writes.join_next().await {
        acknowledged += done.unwrap() as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    sampling.store(false, Ordering::Relaxed);
    let (max_lag_seconds, max_lag_changes) = sampler.await.unwrap();
    println!("writes: {acknowledged} of {total} acknowledged in {elapsed:.1} s ({:.1} per second), alternating between the replicas", acknowledged as f64 / elapsed);
    for (name, replica) in [("A", &replica_a), ("B", &replica_b)] {
        let buckets = replica.metric(&client, "attnrec_replication_delay_seconds_bucket").await;
        let count = replica.metric(&client, "attnrec_replication_delay_seconds_count").await[0].1;
        let sum = replica.metric(&client, "attnrec_replication_delay_seconds_sum").await[0].1;
        println!(
            "replica {name}: {count} changes applied, mean delay {:.1} ms, p50 <= {} s, p99 <= {} s",
            sum / count * 1000.0,
            bucket_quantile(&buckets, 0.50),
            bucket_quantile(&buckets, 0.99)
        );
    }
    println!("largest lag sampled every 100 ms on either replica: {max_lag_seconds:.3} s, {max_lag_changes} changes");

    read_load("one replica", &[&replica_a], &queries, clients, seconds).await;
    read_load("two replicas", &[&replica_a, &replica_b], &queries, clients, seconds).await;
}
