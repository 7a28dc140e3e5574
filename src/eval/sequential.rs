//! `attnrec eval-history`: next-item prediction on shoppers' event sequences (such as
//! MovieLens ratings) with a leave-last-out split. It compares popularity, the plain mean of
//! the history and the history attention before and after training, all without a query.
//! When an item field is named, each step also gets a query made from the predicted item's
//! field (such as its genres), and the methods run again with it, beside that query alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::catalog::{read_catalog, CatalogError, FieldSelection, Item};
use crate::config::Settings;
use crate::history::{leave_last_out, train_history, HistoryReport, HistoryTrainOptions, HistoryWeights, Ranker, SequenceSplit, SequentialMetrics};
use crate::service::{load_model, ServiceError};
use crate::train::{prepare_history, HistoryEvent};

/// Column names accepted for each field of an events file, in order of preference.
const USER_COLUMNS: [&str; 3] = ["user_id", "userId", "user"];
const ITEM_COLUMNS: [&str; 4] = ["item_id", "movieId", "item", "id"];
const TIME_COLUMNS: [&str; 3] = ["timestamp", "occurred_at", "time"];

#[derive(Debug, Clone)]
pub struct SequentialOptions {
    /// Item field whose value, with `|` read as a space, becomes each event's query.
    pub query_field: Option<String>,
    pub head: Option<PathBuf>,
    pub cache_dir: PathBuf,
    pub out_dir: Option<PathBuf>,
    pub train: HistoryTrainOptions,
}

#[derive(Debug, Clone, Serialize)]
pub struct SequentialMethod {
    pub name: String,
    /// Whether the method saw a query made from the predicted item.
    pub query: bool,
    #[serde(flatten)]
    pub metrics: SequentialMetrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct SequentialReport {
    pub users: usize,
    pub items: usize,
    pub events: usize,
    pub skipped_events: usize,
    pub methods: Vec<SequentialMethod>,
    pub training: HistoryReport,
    pub seconds: f64,
}

/// Reads a CSV of events with a user, an item and a time column (see the `*_COLUMNS` names).
pub fn read_events(path: &Path, items: &[Item], query_field: Option<&str>) -> Result<Vec<HistoryEvent>, CatalogError> {
    let invalid = |line: u64, message: String| CatalogError::InvalidCatalog { path: path.to_path_buf(), line, message };
    let mut reader = csv::Reader::from_path(path).map_err(|err| invalid(0, err.to_string()))?;
    let headers = reader.headers().map_err(|err| invalid(1, err.to_string()))?.clone();
    let column = |names: &[&str]| {
        names.iter().find_map(|name| headers.iter().position(|header| header == *name)).ok_or_else(|| invalid(1, format!("no column named any of {names:?}")))
    };
    let (user, item, time) = (column(&USER_COLUMNS)?, column(&ITEM_COLUMNS)?, column(&TIME_COLUMNS)?);

    let queries: HashMap<&str, String> = match query_field {
        Some(field) => items.iter().filter_map(|entry| entry.attributes.get(field).map(|value| (entry.id.as_str(), query_text(value)))).collect(),
        None => HashMap::new(),
    };
    let mut events = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|err| invalid(0, err.to_string()))?;
        let line = record.position().map(|position| position.line()).unwrap_or(0);
        let time: f64 = record[time].trim().parse().map_err(|_| invalid(line, format!("time {:?} is not a number of seconds", &record[time])))?;
        let item_id = record[item].trim().to_string();
        let query = queries.get(item_id.as_str()).cloned();
        events.push(HistoryEvent { user: record[user].trim().to_string(), item_id, time, query });
    }
    Ok(events)
}

fn query_text(value: &serde_json::Value) -> String {
    let text = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
    text.replace('|', " ")
}

/// Trains history weights on the training steps and measures every method on the test steps.
pub fn evaluate_history(settings: &Settings, catalog: &Path, events: &Path, options: &SequentialOptions) -> Result<SequentialReport, ServiceError> {
    let started = Instant::now();
    let fields = FieldSelection { id_field: settings.catalog.id_field.clone(), text_fields: settings.catalog.text_fields.clone() };
    let items = read_catalog(catalog, &fields)?;
    let events = read_events(events, &items, options.query_field.as_deref())?;
    let model = load_model(settings)?;
    let dim = model.encoder.hidden_size();
    let device = model.encoder.device().clone();
    let head = match &options.head {
        Some(path) => crate::pooling::AttentionHead::load(path, dim, &device)?,
        None => crate::pooling::AttentionHead::untrained(dim, &device)?,
    };
    let prepared = prepare_history(&model, &head, &items, &events, &options.cache_dir)?;
    let data = &prepared.data;

    let targets = leave_last_out(&data.sequences);
    let test: Vec<_> = targets.iter().copied().filter(|target| target.split == SequenceSplit::Test).collect();
    let held_out: std::collections::HashSet<(usize, usize)> =
        targets.iter().filter(|target| target.split != SequenceSplit::Train).map(|target| (target.sequence, target.position)).collect();
    let mut popularity = vec![0f32; items.len()];
    for (sequence, steps) in data.sequences.iter().enumerate() {
        for (position, step) in steps.steps.iter().enumerate() {
            if !held_out.contains(&(sequence, position)) {
                popularity[step.item] += 1.0;
            }
        }
    }

    let (trained, training) = train_history(data, &options.train)?;
    let max_items = options.train.max_items;
    let mean = HistoryWeights::uniform(dim, max_items, &device)?;
    let untrained = HistoryWeights::untrained(dim, max_items, &device)?;
    let mut methods = Vec::new();
    let mut measure = |name: &str, ranker: Ranker, query: bool| -> Result<(), ServiceError> {
        let metrics = data.measure(&test, &ranker, query, max_items, true)?;
        tracing::info!(method = name, query, hit_rate_at_10 = metrics.hit_rate_at_10, "measured");
        methods.push(SequentialMethod { name: name.to_string(), query, metrics });
        Ok(())
    };
    measure("popularity", Ranker::Fixed(&popularity), false)?;
    measure("history mean", Ranker::Attention(&mean), false)?;
    measure("history attention (untrained)", Ranker::Attention(&untrained), false)?;
    measure("history attention (trained)", Ranker::Attention(&trained), false)?;
    if data.queries.is_some() {
        measure("query only", Ranker::QueryOnly, true)?;
        measure("query + history mean", Ranker::Attention(&mean), true)?;
        measure("query + history attention (untrained)", Ranker::Attention(&untrained), true)?;
        measure("query + history attention (trained)", Ranker::Attention(&trained), true)?;
    }

    let report = SequentialReport {
        users: data.sequences.len(),
        items: items.len(),
        events: events.len(),
        skipped_events: prepared.skipped_events,
        methods,
        training,
        seconds: started.elapsed().as_secs_f64(),
    };
    if let Some(dir) = &options.out_dir {
        std::fs::create_dir_all(dir).map_err(|source| CatalogError::Io { path: dir.clone(), source })?;
        for (name, content) in [("history-eval.md", sequential_table(&report)), ("history-eval.json", serde_json::to_string_pretty(&report).expect("report serializes"))] {
            let path = dir.join(name);
            std::fs::write(&path, content).map_err(|source| CatalogError::Io { path, source })?;
        }
    }
    Ok(report)
}

/// Renders the methods as a Markdown table.
pub fn sequential_table(report: &SequentialReport) -> String {
    let mut table = String::from("| method | query | test users | HR@10 | nDCG@10 |\n|---|---|---|---|---|\n");
    for method in &report.methods {
        let query = if method.query { "yes" } else { "no" };
        table.push_str(&format!("| {} | {query} | {} | {:.4} | {:.4} |\n", method.name, method.metrics.targets, method.metrics.hit_rate_at_10, method.metrics.ndcg_at_10));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_file_columns_are_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ratings.csv");
        std::fs::write(&path, "userId,movieId,rating,timestamp\n1,10,4.0,100\n1,11,3.5,50\n").unwrap();
        let mut attributes = serde_json::Map::new();
        attributes.insert("genres".into(), "Comedy|Romance".into());
        let items = vec![Item { id: "10".into(), title: "A".into(), text: "A".into(), attributes }];
        let events = read_events(&path, &items, Some("genres")).unwrap();
        assert_eq!(events[0], HistoryEvent { user: "1".into(), item_id: "10".into(), time: 100.0, query: Some("Comedy Romance".into()) });
        assert_eq!(events[1].query, None);

        std::fs::write(&path, "who,movieId,timestamp\n1,10,100\n").unwrap();
        let err = read_events(&path, &items, None).unwrap_err().to_string();
        assert!(err.contains("user_id"), "{err}");
    }
}
