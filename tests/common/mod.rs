//! Shared set-up for the integration tests: a tiny random BERT, a small catalogue, a built
//! data directory and a server on a loopback port.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attnrec::api::{self, AppState};
use attnrec::config::Settings;
use attnrec::service::Recommender;
use tempfile::TempDir;

pub const CATALOG: &str = "id,title,brand,price\n\
    1,Red electric kettle,Acme,19.5\n\
    2,Blue coffee mug,Acme,6\n\
    3,Nike running shoes,Nike,89\n\
    4,Black hiking boots,Trail,120\n\
    5,Green garden hose,Yard,25\n\
    6,Cordless drill,Bolt,79\n\
    7,Steel hammer,Bolt,15\n\
    8,White desk lamp,Lumen,32\n";

/// The API key the fixtures configure for write endpoints.
pub const API_KEY: &str = "test-key-5f1d0c9e";

/// A temporary project: tiny model, catalogue file and settings pointing at them.
pub struct Fixture {
    pub dir: TempDir,
    pub settings: Settings,
    pub catalog: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with_catalog(CATALOG)
    }

    pub fn with_catalog(content: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let model_dir = dir.path().join("model");
        attnrec::testing::write_tiny_bert(&model_dir, 7).expect("tiny model written");
        let catalog = dir.path().join("catalog.csv");
        std::fs::write(&catalog, content).expect("catalogue written");

        let mut settings = Settings::default();
        settings.data_dir = dir.path().join("data");
        settings.model.source = model_dir.display().to_string();
        settings.model.max_tokens = 24;
        settings.batching.max_batch_tokens = 256;
        settings.batching.max_wait_us = 500;
        settings.index.search_threads = 2;
        settings.auth.api_keys = vec![API_KEY.to_string()];
        Self { dir, settings, catalog }
    }

    pub fn model_dir(&self) -> PathBuf {
        self.dir.path().join("model")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Builds the data directory from the fixture's catalogue.
    pub async fn index(&self) {
        attnrec::indexer::build_data_dir(&self.settings, &self.catalog, None).await.expect("index built");
    }
}

/// A server on 127.0.0.1 with an ephemeral port, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(settings: &Settings) -> Self {
        let recommender = Arc::new(Recommender::open(settings).await.expect("data directory opens"));
        while !recommender.is_ready() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Self::start_with_state(AppState::new(recommender, settings), settings).await
    }

    pub async fn start_with_state(state: AppState, settings: &Settings) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback port");
        let addr = listener.local_addr().expect("bound address");
        let app = api::router(state, settings.server.body_limit_bytes);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(api::serve(listener, app, async move {
            let _ = stopped.await;
        }));
        Self { addr, client: reqwest::Client::new(), stop: Some(stop) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request with the API key and a JSON body, when given. Returns the status and
    /// the parsed body, null when the body is empty.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        call(&self.client, &self.url(path), method, body).await
    }

    /// POSTs a JSON value to /recommend and returns the status and the parsed body.
    pub async fn recommend(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self.client.post(self.url("/recommend")).json(&body).send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The real all-MiniLM-L6-v2 directory (fetched by scripts/fetch-models.sh), or a panic that explains
/// how to get it.
pub fn real_model_dir() -> PathBuf {
    let dir = std::env::var("ATTNREC_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2"));
    assert!(
        dir.join("model.safetensors").is_file(),
        "the real model is missing at {}; run scripts/fetch-models.sh (make test does) or set ATTNREC_TEST_MODEL_DIR",
        dir.display()
    );
    dir
}

/// Returns the real multilingual-e5-small directory (4-bit weights and tokenizer, fetched by
/// scripts/fetch-models.sh all), or panics with how to get it.
pub fn real_e5_model_dir() -> PathBuf {
    let dir = std::env::var("ATTNREC_TEST_E5_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/multilingual-e5-small"));
    assert!(
        dir.join("e5-small-q4.bin").is_file() && dir.join("tokenizer.json").is_file(),
        "the real multilingual-e5-small model is missing at {}; run scripts/fetch-models.sh all (make test does) \
         or set ATTNREC_TEST_E5_MODEL_DIR",
        dir.display()
    );
    dir
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm_a: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let norm_b: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm_a * norm_b)
}

/// Sends a request with the API key; returns the status and the parsed JSON body.
pub async fn call(client: &reqwest::Client, url: &str, method: reqwest::Method, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let mut request = client.request(method, url).bearer_auth(API_KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body read");
    let body = if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
    (status, body)
}

/// `attnrec serve` as a child process on a loopback port the kernel picks.
pub struct ChildServer {
    pub child: Child,
    pub address: String,
    pub client: reqwest::Client,
    /// Every line the server has written to stderr so far, start-up included.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ChildServer {
    /// Starts serving the fixture's data directory with its tiny model and API key, plus
    /// `settings` as ATTNREC_ environment variables, and waits for the listening address.
    pub fn start(fixture: &Fixture, settings: &[(&str, &str)]) -> Self {
        Self::start_in(fixture, &fixture.path("data"), settings)
    }

    /// Starts like `start`, serving `data_dir` instead of the fixture's data directory.
    pub fn start_in(fixture: &Fixture, data_dir: &Path, settings: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_attnrec"));
        command
            .args(["serve", "--data-dir", data_dir.to_str().unwrap(), "--model", fixture.model_dir().to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("ATTNREC_AUTH__API_KEYS", API_KEY)
            .env("ATTNREC_MODEL__MAX_TOKENS", fixture.settings.model.max_tokens.to_string())
            .stderr(Stdio::piped());
        for (key, value) in settings {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("attnrec serve starts");

        // The "listening" log line carries the port the kernel chose.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut start_up = Vec::new();
        let address = loop {
            assert!(Instant::now() < deadline, "serve did not start listening");
            let line = lines.next().expect("serve exited before listening").unwrap();
            let address = line.split("address=").nth(1).map(|rest| rest.split_whitespace().next().unwrap().to_string());
            start_up.push(line);
            if let Some(address) = address {
                break address;
            }
        };
        let log = Arc::new(std::sync::Mutex::new(start_up));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, address, client: reqwest::Client::new(), log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Returns a handle for sending requests from another task. It owns no process.
    pub fn view(client: reqwest::Client, address: String) -> ServerView {
        ServerView { client, address }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.client.get(self.url("/ready")).send().await.map(|response| response.status().as_u16()).unwrap_or(0) != 200 {
            assert!(Instant::now() < deadline, "serve never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        call(&self.client, &self.url(path), method, body).await
    }

    /// Sends SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL sent");
        self.child.wait().expect("child reaped");
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success());
    }

    pub fn wait(mut self) -> ExitStatus {
        self.child.wait().expect("child reaped")
    }
}

impl Drop for ChildServer {
    /// Kills a server that a test left running, so no process outlives the test binary.
    /// A child already reaped by `kill` or `wait` is left alone.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address of a child server, for tasks that send requests to it.
pub struct ServerView {
    pub client: reqwest::Client,
    pub address: String,
}

impl ServerView {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }
}
