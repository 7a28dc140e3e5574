use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

use attnrec::commands;
use attnrec::config::Settings;

/// Recommends catalogue items for a shopper's free text.
#[derive(Parser)]
#[command(name = "attnrec", version, about)]
struct Cli {
    /// Configuration file (TOML). Default: config/default.toml when it exists.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Flags shared by every command that loads a model and a data directory.
#[derive(Args)]
struct Common {
    /// Data directory (catalogue database, index, manifest). Sets `data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Model directory or Hugging Face Hub id. Sets `model.source`.
    #[arg(long, value_name = "DIR_OR_ID")]
    model: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Read a catalogue file (CSV or JSON Lines), embed every item and write a data directory.
    Index {
        #[command(flatten)]
        common: Common,
        /// Catalogue file: .csv with a header row, or .jsonl/.ndjson with one object per line.
        #[arg(long, value_name = "FILE")]
        catalog: PathBuf,
        /// Field that contains the item id. Sets `catalog.id_field`.
        #[arg(long)]
        id_field: Option<String>,
        /// Comma-separated fields joined into the embedded text. Sets `catalog.text_fields`.
        #[arg(long, value_delimiter = ',')]
        text_fields: Option<Vec<String>>,
        /// Trained pooling head (safetensors) to embed items with; stored in the data directory.
        #[arg(long, value_name = "FILE")]
        head: Option<PathBuf>,
    },
    /// Serve the HTTP API over a data directory.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address and port to listen on. Sets `server.listen`.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Print recommendations for one query.
    Recommend {
        #[command(flatten)]
        common: Common,
        /// The query text.
        text: String,
        /// Number of items (default: `server.default_k`).
        #[arg(short, long)]
        k: Option<usize>,
        /// Show the attention weight of each word.
        #[arg(long)]
        explain: bool,
        /// Print the same JSON as POST /recommend.
        #[arg(long)]
        json: bool,
    },
    /// Measure nDCG@10, recall@10, recall@100 and MRR@10 against relevance judgments.
    ///
    /// With --catalog, compares BM25, CLS pooling, mean pooling, the trained head (--head, or
    /// the data directory's) and a BM25 hybrid, each ranking the whole catalogue exactly.
    /// Without it, measures the served pipeline of --data-dir (head and HNSW index).
    Eval {
        #[command(flatten)]
        common: Common,
        /// Judgments CSV with the columns query,id,relevance.
        #[arg(long, value_name = "FILE")]
        judgments: PathBuf,
        /// Catalogue file the judgments refer to; turns on the comparison of methods.
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
        /// Trained head to evaluate (default: the data directory's head, when it has one).
        #[arg(long, value_name = "FILE")]
        head: Option<PathBuf>,
        /// Queries to evaluate: the held-out test split of `attnrec train`, or all.
        #[arg(long, value_enum, default_value_t = attnrec::train::Split::All)]
        split: attnrec::train::Split,
        /// Seed of the query split; use the one given to `attnrec train`.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Directory for the Markdown table (eval.md) and bar chart (eval.png).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// Directory of cached encoder features, shared with `attnrec train`.
        #[arg(long, value_name = "DIR", default_value = "var/cache")]
        cache_dir: PathBuf,
        /// Lowest relevance that counts as relevant for recall and MRR.
        #[arg(long, default_value_t = 2.5)]
        threshold: f64,
        /// Evaluate only the first N queries.
        #[arg(long)]
        limit: Option<usize>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Learn the pooling head from relevance judgments or from the feedback log, with the
    /// encoder frozen.
    Train {
        #[command(flatten)]
        common: Common,
        /// Catalogue file the judgments refer to (CSV or JSON Lines).
        #[arg(long, value_name = "FILE", requires = "judgments", required_unless_present = "feedback")]
        catalog: Option<PathBuf>,
        /// Judgments CSV with the columns query,id,relevance.
        #[arg(long, value_name = "FILE", requires = "catalog")]
        judgments: Option<PathBuf>,
        /// Train on the data directory's items and feedback log instead of files: each
        /// (query, item) pair with events is graded by its strongest event (click 1,
        /// add_to_cart 2, purchase 3, rating its value).
        #[arg(long, conflicts_with_all = ["catalog", "judgments"])]
        feedback: bool,
        /// Learn the history attention instead of the head, from the feedback log's events
        /// with a user id: each event is predicted from the user's events before it.
        #[arg(long, requires = "feedback")]
        history: bool,
        /// Most recent history items per prediction (with --history).
        #[arg(long, default_value_t = 20)]
        history_items: usize,
        /// With --history: shoppers come back to items they had before, so those stay
        /// candidates while training (serve with `exclude_history` off).
        #[arg(long, requires = "history")]
        repeats: bool,
        /// Output file (safetensors); the JSON report is written beside it. Default:
        /// head.safetensors, or history.safetensors with --history.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Seed of the query split, the shuffling and the negative sampling.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Maximum passes over the training examples.
        #[arg(long, default_value_t = 30)]
        epochs: usize,
        /// Learning rate of AdamW for W_q and W_score.
        #[arg(long, default_value_t = 3e-6)]
        learning_rate: f64,
        /// Learning rate of AdamW for W_attn.
        #[arg(long, default_value_t = 3e-4)]
        attention_learning_rate: f64,
        /// Hard negatives sampled per example.
        #[arg(long, default_value_t = 4)]
        hard_negatives: usize,
        /// Softmax temperature on cosine scores.
        #[arg(long, default_value_t = 0.05)]
        temperature: f64,
        /// Directory for cached encoder features (token states), reused across runs.
        #[arg(long, value_name = "DIR", default_value = "var/cache")]
        cache_dir: PathBuf,
        /// Field that contains the item id. Sets `catalog.id_field`.
        #[arg(long)]
        id_field: Option<String>,
        /// Comma-separated fields joined into the embedded text. Sets `catalog.text_fields`.
        #[arg(long, value_delimiter = ',')]
        text_fields: Option<Vec<String>>,
    },
    /// Measure next-item prediction from shoppers' histories (HR@10, nDCG@10) on an events
    /// file such as MovieLens ratings, with a leave-last-out split.
    ///
    /// Compares popularity, the mean of the history, and the history attention before and
    /// after training on the earlier steps. With --query-field, the methods also run with a
    /// query made from the predicted item's field, beside that query alone.
    EvalHistory {
        #[command(flatten)]
        common: Common,
        /// Catalogue file (CSV or JSON Lines).
        #[arg(long, value_name = "FILE")]
        catalog: PathBuf,
        /// Events CSV with user (user_id, userId or user), item (item_id, movieId, item or id)
        /// and time (timestamp, occurred_at or time, in seconds) columns.
        #[arg(long, value_name = "FILE")]
        events: PathBuf,
        /// Field that contains the item id. Sets `catalog.id_field`.
        #[arg(long)]
        id_field: Option<String>,
        /// Comma-separated fields joined into the embedded text. Sets `catalog.text_fields`.
        #[arg(long, value_delimiter = ',')]
        text_fields: Option<Vec<String>>,
        /// Item field whose value becomes each event's query (`|` read as a space).
        #[arg(long)]
        query_field: Option<String>,
        /// Pooling head for items and queries (default: the untrained head).
        #[arg(long, value_name = "FILE")]
        head: Option<PathBuf>,
        /// Most recent history items per prediction.
        #[arg(long, default_value_t = 20)]
        history_items: usize,
        /// Maximum training epochs.
        #[arg(long, default_value_t = 20)]
        epochs: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Directory of cached encoder features.
        #[arg(long, value_name = "DIR", default_value = "var/cache")]
        cache_dir: PathBuf,
        /// Directory for the Markdown table (history-eval.md) and JSON report.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the OpenAPI document generated from the code.
    Openapi,
}

/// Turns the flags that were given into a partial settings tree that overrides the rest.
fn overrides(common: Option<&Common>, extra: &[(&str, &str, Value)]) -> Value {
    let mut root = Map::new();
    if let Some(common) = common {
        if let Some(dir) = &common.data_dir {
            root.insert("data_dir".into(), json!(dir));
        }
        if let Some(model) = &common.model {
            root.insert("model".into(), json!({ "source": model }));
        }
    }
    for (section, key, value) in extra {
        if value.is_null() {
            continue;
        }
        let entry = root.entry(section.to_string()).or_insert_with(|| json!({}));
        entry.as_object_mut().expect("sections are objects").insert(key.to_string(), value.clone());
    }
    Value::Object(root)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let flags = match &cli.command {
        Command::Index { common, id_field, text_fields, .. } => overrides(
            Some(common),
            &[("catalog", "id_field", json!(id_field)), ("catalog", "text_fields", json!(text_fields))],
        ),
        Command::Serve { common, listen } => overrides(Some(common), &[("server", "listen", json!(listen))]),
        Command::Train { common, id_field, text_fields, .. } => overrides(
            Some(common),
            &[("catalog", "id_field", json!(id_field)), ("catalog", "text_fields", json!(text_fields))],
        ),
        Command::EvalHistory { common, id_field, text_fields, .. } => overrides(
            Some(common),
            &[("catalog", "id_field", json!(id_field)), ("catalog", "text_fields", json!(text_fields))],
        ),
        Command::Recommend { common, .. } | Command::Eval { common, .. } => overrides(Some(common), &[]),
        Command::Openapi => overrides(None, &[]),
    };
    let settings = Settings::load(cli.config.as_deref(), flags)?;
    let _telemetry = attnrec::telemetry::init(&settings.log);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Index { catalog, head, .. } => commands::index(&settings, &catalog, head.as_deref()).await,
            Command::Serve { .. } => commands::serve(&settings).await,
            Command::Recommend { text, k, explain, json, .. } => commands::recommend(&settings, text, k, explain, json).await,
            Command::Eval { judgments, catalog: Some(catalog), head, split, seed, out_dir, cache_dir, threshold, limit, json, .. } => {
                let options = attnrec::eval::CompareOptions { head, split, seed, threshold, limit, cache_dir, out_dir };
                commands::compare(&settings, &catalog, &judgments, &options, json)
            }
            Command::Eval { judgments, threshold, limit, json, .. } => commands::eval(&settings, &judgments, threshold, limit, json).await,
            Command::Train { history: true, history_items, repeats, out, seed, epochs, temperature, cache_dir, .. } => {
                let options = attnrec::history::HistoryTrainOptions {
                    seed,
                    max_epochs: epochs,
                    max_items: history_items,
                    temperature,
                    exclude_seen: !repeats,
                    ..Default::default()
                };
                let out = out.unwrap_or_else(|| PathBuf::from("history.safetensors"));
                commands::train_history(&settings, &out, &cache_dir, &options).await
            }
            Command::EvalHistory { catalog, events, query_field, head, history_items, epochs, seed, cache_dir, out_dir, json, .. } => {
                let train = attnrec::history::HistoryTrainOptions { seed, max_epochs: epochs, max_items: history_items, ..Default::default() };
                let options = attnrec::eval::SequentialOptions { query_field, head, cache_dir, out_dir, train };
                commands::eval_history(&settings, &catalog, &events, &options, json)
            }
            Command::Train {
                catalog, judgments, feedback, out, seed, epochs, learning_rate, attention_learning_rate, hard_negatives, temperature, cache_dir, ..
            } => {
                let out = out.unwrap_or_else(|| PathBuf::from("head.safetensors"));
                let options = attnrec::train::TrainOptions {
                    seed,
                    max_epochs: epochs,
                    learning_rate,
                    attention_learning_rate,
                    hard_negatives,
                    temperature,
                    cache_dir,
                    ..Default::default()
                };
                let data = match (catalog, judgments) {
                    (Some(catalog), Some(judgments)) if !feedback => attnrec::train::TrainingData::from_files(&settings, &catalog, &judgments)?,
                    _ => attnrec::train::feedback_training_data(&settings).await?,
                };
                commands::train(&settings, data, &out, &options)
            }
            Command::Openapi => {
                commands::openapi();
                Ok(())
            }
        }
    })
}
