//! Subcommand bodies, run once the command line is parsed.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::api::{self, AppState};
use crate::config::Settings;
use crate::eval::{evaluate, read_judgments};
use crate::indexer::build_data_dir;
use crate::service::Recommender;

/// `attnrec index`: builds the data directory from a catalogue file.
pub async fn index(settings: &Settings, catalog: &Path, head: Option<&Path>) -> anyhow::Result<()> {
    let report = build_data_dir(settings, catalog, head).await?;
    println!(
        "indexed {} items into {} in {:.1} s ({} texts truncated at {} tokens)",
        report.items,
        report.data_dir.display(),
        report.elapsed_seconds,
        report.truncated,
        settings.model.max_tokens
    );
    Ok(())
}

/// `attnrec serve`: loads the data directory, then serves HTTP until SIGTERM or Ctrl-C.
pub async fn serve(settings: &Settings) -> anyhow::Result<()> {
    let recommender = Arc::new(Recommender::open(settings).await?);
    let listener = tokio::net::TcpListener::bind(&settings.server.listen)
        .await
        .with_context(|| format!("failed to listen on {}; set --listen or server.listen to a free address", settings.server.listen))?;
    tracing::info!(address = %listener.local_addr()?, device = recommender.device(), "listening");

    if settings.auth.api_keys.is_empty() {
        tracing::warn!("no API key is configured (auth.api_keys), so the write endpoints return 403");
    }
    if settings.feedback.hash_user_ids && settings.feedback.user_id_salt.is_empty() {
        tracing::warn!("feedback.user_id_salt is empty, so hashed user ids can be recomputed by anyone who knows an id; set ATTNREC_FEEDBACK__USER_ID_SALT");
    }

    let upkeep = tokio::spawn(run_upkeep(recommender.clone(), settings.index.snapshot_interval_s));
    let follower = recommender.follow_changes(std::time::Duration::from_millis(settings.storage.poll_interval_ms));
    let app = api::router(AppState::new(recommender.clone(), settings), settings.server.body_limit_bytes);
    api::serve(listener, app, shutdown_signal()).await?;
    upkeep.abort();
    if let Some(follower) = follower {
        follower.abort();
    }
    // Requests have drained: every acknowledged write is already committed. Save the index
    // so the next start has nothing to replay.
    recommender.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Saves index snapshots every `snapshot_interval_s` seconds (when writes arrived) and
/// deletes expired feedback hourly.
async fn run_upkeep(recommender: Arc<Recommender>, snapshot_interval_s: u64) {
    const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
    let mut retention = tokio::time::interval(RETENTION_INTERVAL);
    // 0 means "only at shutdown": a period of a century never fires.
    const CENTURY_SECONDS: u64 = 100 * 365 * 86_400;
    let snapshot_period = std::time::Duration::from_secs(if snapshot_interval_s == 0 { CENTURY_SECONDS } else { snapshot_interval_s });
    let mut snapshots = tokio::time::interval_at(tokio::time::Instant::now() + snapshot_period, snapshot_period);
    loop {
        tokio::select! {
            _ = retention.tick() => {
                if let Err(err) = recommender.apply_retention().await {
                    tracing::error!(error = %err, "deleting expired feedback failed");
                }
            }
            _ = snapshots.tick() => {
                if let Err(err) = recommender.save_snapshot().await {
                    tracing::error!(error = %err, "saving the index snapshot failed; the database still contains every write, and the next start replays it");
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}

/// `attnrec recommend`: one query from the terminal, printed as a table or as JSON.
pub async fn recommend(settings: &Settings, text: String, k: Option<usize>, explain: bool, json: bool) -> anyhow::Result<()> {
    let recommender = Arc::new(Recommender::open(settings).await?);
    while !recommender.is_ready() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let query = recommender.validate(crate::service::QueryInput { explain, ..crate::service::QueryInput::text(text, k.unwrap_or(settings.server.default_k)) })?;
    let result = recommender.recommend(query).await?;

    if json {
        println!("{}", serde_json::to_string_pretty(&api::RecommendResponse::from(result))?);
        return Ok(());
    }

    println!("{:>4}  {:>6}  {:<12}  title", "rank", "score", "id");
    for (rank, item) in result.items.iter().enumerate() {
        println!("{:>4}  {:>6.3}  {:<12}  {}", rank + 1, item.score, item.id, item.title);
    }
    if let Some(words) = result.explain {
        println!("\nattention per word:");
        for word in words {
            println!("  {:<20} {:.3} {}", word.text, word.weight, "#".repeat((word.weight * 40.0).round() as usize));
        }
    }
    if result.truncated {
        println!("\nnote: the query was longer than {} tokens and was truncated", settings.model.max_tokens);
    }
    Ok(())
}

/// `attnrec eval`: ranking quality of the data directory against judgments.
pub async fn eval(settings: &Settings, judgments: &Path, threshold: f64, limit: Option<usize>, json: bool) -> anyhow::Result<()> {
    let judgments = read_judgments(judgments)?;
    let report = evaluate(settings, &judgments, threshold, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("queries: {} ({} with an item of relevance >= {threshold})", report.queries, report.queries_with_relevant);
    println!("| nDCG@10 | recall@10 | recall@100 | MRR@10 |");
    println!("|---|---|---|---|");
    println!("| {:.4} | {:.4} | {:.4} | {:.4} |", report.ndcg_at_10, report.recall_at_10, report.recall_at_100, report.mrr_at_10);
    println!("nDCG uses the grade as gain; unjudged items count as non-relevant; {:.1} s", report.seconds);
    Ok(())
}

/// `attnrec eval --catalog`: compares retrieval methods on the same queries.
pub fn compare(settings: &Settings, catalog: &Path, judgments: &Path, options: &crate::eval::CompareOptions, json: bool) -> anyhow::Result<()> {
    let mut options = options.clone();
    if options.head.is_none() {
        let stored = settings.data_dir.join(crate::catalog::HEAD_FILE);
        options.head = stored.is_file().then_some(stored);
    }
    let reports = crate::eval::compare_methods(settings, catalog, judgments, &options)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    print!("{}", crate::eval::markdown_table(&reports));
    println!(
        "relevant: grade >= {}; nDCG uses the grade as gain; unjudged items count as non-relevant",
        options.threshold
    );
    if let Some(dir) = &options.out_dir {
        println!("table and chart written to {}", dir.display());
    }
    Ok(())
}

/// `attnrec train`: learns a head and prints how it did on the validation queries.
pub fn train(settings: &Settings, data: crate::train::TrainingData, out: &Path, options: &crate::train::TrainOptions) -> anyhow::Result<()> {
    let report = crate::train::train_on(settings, data, out, options)?;
    println!(
        "trained on {} queries ({} examples) in {:.1} s; validation nDCG@10 {:.4} at epoch {} (untrained head: {:.4})",
        report.train_queries,
        report.examples,
        report.seconds,
        report.best_validation_ndcg_at_10,
        report.best_epoch,
        report.baseline_validation_ndcg_at_10
    );
    println!("head written to {} with its report beside it", out.display());
    Ok(())
}

/// `attnrec train --history`: learns history weights from the feedback log and prints how
/// they did on the validation steps.
pub async fn train_history(settings: &Settings, out: &Path, cache_dir: &Path, options: &crate::history::HistoryTrainOptions) -> anyhow::Result<()> {
    let report = crate::train::train_history_from_feedback(settings, out, cache_dir, options).await?;
    println!(
        "trained on {} steps of {} shoppers in {:.1} s; validation nDCG@10 {:.4} at epoch {} (untrained: {:.4})",
        report.training_steps,
        report.sequences,
        report.seconds,
        report.best_validation.ndcg_at_10,
        report.best_epoch,
        report.baseline_validation.ndcg_at_10
    );
    if report.best_epoch == 0 {
        println!(
            "warning: no epoch improved on the untrained weights, so the untrained weights were written; \
             the log has {} validation steps, and learning needs more shoppers with several events each",
            report.validation_steps
        );
    }
    println!("history weights written to {} with their report beside them; restart `serve` to load them", out.display());
    Ok(())
}

/// `attnrec eval-history`: next-item prediction on event sequences.
pub fn eval_history(settings: &Settings, catalog: &Path, events: &Path, options: &crate::eval::SequentialOptions, json: bool) -> anyhow::Result<()> {
    let report = crate::eval::evaluate_history(settings, catalog, events, options)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print!("{}", crate::eval::sequential_table(&report));
    println!(
        "{} shoppers, {} items, {} events ({} skipped: item not in the catalogue); leave-last-out test steps; items seen before each step are left out of its ranking",
        report.users, report.items, report.events, report.skipped_events
    );
    if let Some(dir) = &options.out_dir {
        println!("table and report written to {}", dir.display());
    }
    Ok(())
}

/// `attnrec openapi`: prints the OpenAPI document generated from the code.
pub fn openapi() {
    print!("{}", api::openapi_yaml());
}
