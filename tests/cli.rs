//! The `attnrec` binary end to end: index, recommend, serve, and its refusals.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{ChildServer, Fixture};

fn attnrec(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_attnrec"));
    command.args(args).env_remove("RUST_LOG");
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("attnrec runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn index_fixture(fixture: &Fixture) {
    let output = attnrec(
        &["index", "--catalog", fixture.catalog.to_str().unwrap(), "--data-dir", fixture.path("data").to_str().unwrap(), "--model",
            fixture.model_dir().to_str().unwrap()],
        &[],
    );
    assert!(output.status.success(), "index failed: {}", text(&output.stderr));
    assert!(text(&output.stdout).contains("indexed 8 items"), "{}", text(&output.stdout));
}

#[test]
fn index_then_recommend_prints_json() {
    let fixture = Fixture::new();
    index_fixture(&fixture);
    let output = attnrec(
        &["recommend", "--data-dir", fixture.path("data").to_str().unwrap(), "--model", fixture.model_dir().to_str().unwrap(),
            "Black hiking boots", "-k", "2", "--json", "--explain"],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let body: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
    assert_eq!(body["items"][0]["id"], "4");
    assert_eq!(body["explain"]["tokens"].as_array().unwrap().len(), 3);
}

#[test]
fn environment_overrides_config() {
    let fixture = Fixture::new();
    index_fixture(&fixture);
    let mut command = Command::new(env!("CARGO_BIN_EXE_attnrec"));
    let output = command
        .args(["recommend", "--data-dir", fixture.path("data").to_str().unwrap(), "--model", fixture.model_dir().to_str().unwrap(), "mug", "-k", "5"])
        .env("ATTNREC_SERVER__MAX_K", "3")
        .env("ATTNREC_SERVER__DEFAULT_K", "2")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("use a value from 1 to 3"), "{}", text(&output.stderr));
}

#[test]
fn serve_rejects_index_built_with_another_model() {
    let fixture = Fixture::new();
    index_fixture(&fixture);
    let other_model = fixture.path("other-model");
    attnrec::testing::write_tiny_bert(&other_model, 8).unwrap();

    let output = attnrec(
        &["serve", "--data-dir", fixture.path("data").to_str().unwrap(), "--model", other_model.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &[],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("does not match this configuration"), "{stderr}");
    assert!(stderr.contains("attnrec index"), "{stderr}");
}

#[test]
fn serve_rejects_unindexed_directory() {
    let fixture = Fixture::new();
    let output = attnrec(
        &["serve", "--data-dir", fixture.path("empty").to_str().unwrap(), "--model", fixture.model_dir().to_str().unwrap()],
        &[],
    );
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("attnrec index --catalog"), "{}", text(&output.stderr));
}

#[test]
fn hub_id_resolves_from_local_cache() {
    let fixture = Fixture::new();
    let snapshot = fixture.path("hf/hub/models--acme--tiny-bert/snapshots/0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(fixture.model_dir().join(name), snapshot.join(name)).unwrap();
    }
    let refs = fixture.path("hf/hub/models--acme--tiny-bert/refs");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::write(refs.join("main"), "0123abcd").unwrap();

    let data = fixture.path("data");
    let output = attnrec(
        &["index", "--catalog", fixture.catalog.to_str().unwrap(), "--data-dir", data.to_str().unwrap(), "--model", "acme/tiny-bert"],
        &[("HF_HOME", &fixture.path("hf"))],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"]["name"], "acme/tiny-bert");
}

#[test]
fn unknown_hub_id_fails_with_hint() {
    let fixture = Fixture::new();
    let output = attnrec(
        &["index", "--catalog", fixture.catalog.to_str().unwrap(), "--data-dir", fixture.path("data").to_str().unwrap(), "--model", "acme/missing"],
        &[("HF_HOME", &fixture.path("hf"))],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("acme/missing"), "{stderr}");
}

#[test]
fn serve_answers_then_stops_on_sigterm() {
    let fixture = Fixture::new();
    index_fixture(&fixture);
    let server = ChildServer::start(&fixture, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        server.wait_ready().await;
        let (status, _) = server.call(reqwest::Method::POST, "/recommend", Some(serde_json::json!({"query": "kettle", "k": 1}))).await;
        assert_eq!(status, 200);
    });
    server.terminate();
    let status = server.wait();
    assert!(status.success(), "serve exited with {status}");
}

#[test]
fn train_needs_feedback_or_files() {
    let fixture = Fixture::new();
    index_fixture(&fixture);
    let (data, model, out, cache) = (fixture.path("data"), fixture.model_dir(), fixture.path("head.safetensors"), fixture.path("cache"));
    let common = ["--data-dir", data.to_str().unwrap(), "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap()];

    let with_feedback: Vec<&str> = ["train", "--feedback"].iter().chain(common.iter()).copied().collect();
    let output = attnrec(&with_feedback, &[]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("the feedback log in"), "{}", text(&output.stderr));

    let without_source: Vec<&str> = ["train"].iter().chain(common.iter()).copied().collect();
    let output = attnrec(&without_source, &[]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("--catalog"), "{}", text(&output.stderr));
}

#[test]
fn second_server_on_same_directory_rejected() {
    let fixture = Fixture::new();
    index_fixture(&fixture);
    let first = ChildServer::start(&fixture, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(first.wait_ready());

    let output = attnrec(
        &["serve", "--data-dir", fixture.path("data").to_str().unwrap(), "--model", fixture.model_dir().to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &[],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains(&format!("is in use by process {}", first.child.id())), "{stderr}");
    first.terminate();
    assert!(first.wait().success());
}

#[test]
fn eval_history_compares_the_methods() {
    let fixture = Fixture::new();
    let catalog = fixture.path("movies.csv");
    std::fs::write(&catalog, "movieId,title,genres\n1,Alpha,Comedy\n2,Beta,Drama|Romance\n3,Gamma,Comedy\n4,Delta,Action\n5,Epsilon,Drama\n6,Zeta,Action|Comedy\n").unwrap();
    let events = fixture.path("ratings.csv");
    let mut rows = String::from("userId,movieId,rating,timestamp\n");
    for user in 0..12 {
        for step in 0..5 {
            rows.push_str(&format!("{user},{},4.0,{}\n", (user + step * 5) % 6 + 1, 1000 + step));
        }
    }
    rows.push_str("3,99,4.0,2000\n");
    std::fs::write(&events, rows).unwrap();
    let out_dir = fixture.path("eval");

    let output = attnrec(
        &["eval-history", "--model", fixture.model_dir().to_str().unwrap(), "--catalog", catalog.to_str().unwrap(), "--events",
            events.to_str().unwrap(), "--id-field", "movieId", "--text-fields", "title,genres", "--query-field", "genres", "--epochs", "2",
            "--cache-dir", fixture.path("cache").to_str().unwrap(), "--out-dir", out_dir.to_str().unwrap()],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    for method in ["| popularity | no | 12 |", "| history mean | no |", "| history attention (trained) | no |", "| query only | yes |", "| query + history attention (trained) | yes |"] {
        assert!(stdout.contains(method), "{method} missing from:\n{stdout}");
    }
    assert!(stdout.contains("12 shoppers, 6 items, 61 events (1 skipped"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("history-eval.json")).unwrap()).unwrap();
    assert_eq!(report["methods"].as_array().unwrap().len(), 8);
    assert!(out_dir.join("history-eval.md").is_file());
}
