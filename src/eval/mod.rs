//! `attnrec eval`: offline ranking quality of a data directory against relevance judgments
//! (`query,id,relevance` CSV).

mod chart;
mod compare;
mod metrics;
mod sequential;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub use compare::{compare_methods, markdown_table, rank_exact, reciprocal_rank_fusion, CompareOptions, MethodReport};
pub use metrics::{ndcg_at, recall_at, reciprocal_rank_at};
pub use sequential::{evaluate_history, read_events, sequential_table, SequentialMethod, SequentialOptions, SequentialReport};

use crate::catalog::{CatalogError, ItemStore, Manifest, VectorIndex, INDEX_FILE};
use crate::config::Settings;
use crate::encoder::{TextKind, TokenizedText};
use crate::service::{load_head, load_model, ServiceError};

/// Judgments grouped by query text, in first-seen order.
pub struct Judgments {
    pub queries: Vec<(String, HashMap<String, f64>)>,
}

/// Reads a `query,id,relevance` CSV file.
pub fn read_judgments(path: &Path) -> Result<Judgments, CatalogError> {
    let invalid = |line: u64, message: String| CatalogError::InvalidCatalog { path: path.to_path_buf(), line, message };
    let mut reader = csv::Reader::from_path(path).map_err(|err| invalid(0, err.to_string()))?;
    let headers = reader.headers().map_err(|err| invalid(1, err.to_string()))?.clone();
    let column = |name: &str| headers.iter().position(|header| header == name).ok_or_else(|| invalid(1, format!("missing column {name:?}")));
    let (query_column, id_column, relevance_column) = (column("query")?, column("id")?, column("relevance")?);

    let mut order: Vec<String> = Vec::new();
    let mut grouped: HashMap<String, HashMap<String, f64>> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|err| invalid(0, err.to_string()))?;
        let line = record.position().map(|position| position.line()).unwrap_or(0);
        let relevance: f64 = record[relevance_column].trim().parse().map_err(|_| invalid(line, format!("relevance {:?} is not a number", &record[relevance_column])))?;
        let query = record[query_column].to_string();
        if !grouped.contains_key(&query) {
            order.push(query.clone());
        }
        grouped.entry(query).or_default().insert(record[id_column].trim().to_string(), relevance);
    }
    let queries = order.into_iter().map(|query| { let judged = grouped.remove(&query).unwrap_or_default(); (query, judged) }).collect();
    Ok(Judgments { queries })
}

/// Mean metrics over the evaluated queries.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EvalReport {
    pub queries: usize,
    pub queries_with_relevant: usize,
    pub ndcg_at_10: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
    pub mrr_at_10: f64,
    pub seconds: f64,
}

/// Ranks the catalogue for each judged query with the served pipeline (the data directory's
/// model, head and index) and averages the metrics. `limit` keeps only the first queries.
pub async fn evaluate(settings: &Settings, judgments: &Judgments, threshold: f64, limit: Option<usize>) -> Result<EvalReport, ServiceError> {
    let started = Instant::now();
    let data_dir = &settings.data_dir;
    let manifest = Manifest::read(data_dir)?;
    let model = load_model(settings)?;
    let head = load_head(settings, &manifest, data_dir, &model.encoder)?;
    manifest.check_compatible(data_dir, &model.fingerprint, &head.checksum()?)?;
    let index = VectorIndex::load(&data_dir.join(INDEX_FILE), model.encoder.hidden_size(), &settings.index, 1)?;
    let store = ItemStore::connect(&settings.storage, data_dir).await?;
    let ids: HashMap<u64, String> = store.all_ids().await?.into_iter().collect();

    let queries: Vec<&(String, HashMap<String, f64>)> = judgments.queries.iter().take(limit.unwrap_or(usize::MAX)).collect();
    let progress = ProgressBar::new(queries.len() as u64);
    progress.set_style(ProgressStyle::with_template("evaluating {pos}/{len} queries [{bar:40}] eta {eta}").expect("valid template"));

    let mut sums = EvalReport::default();
    let (mut ndcg_count, mut recall_count) = (0usize, 0usize);
    for chunk in queries.chunks(settings.catalog.batch_size.max(1)) {
        let tokenized: Vec<TokenizedText> = chunk.iter().map(|(query, _)| model.encoder.tokenizer().tokenize(query, TextKind::Query)).collect::<Result<_, _>>()?;
        let batch: Vec<&TokenizedText> = tokenized.iter().collect();
        let states = model.encoder.forward(&batch)?;
        let vectors = head.pool_queries(&states)?.vectors.to_vec2::<f32>().map_err(crate::pooling::PoolingError::from)?;

        for ((_, judged), vector) in chunk.iter().zip(&vectors) {
            let ranked: Vec<String> = index.search(vector, 100)?.iter().filter_map(|hit| ids.get(&hit.key).cloned()).collect();
            sums.queries += 1;
            if let Some(ndcg) = ndcg_at(&ranked, judged, 10) {
                sums.ndcg_at_10 += ndcg;
                ndcg_count += 1;
            }
            if let (Some(r10), Some(r100), Some(rr)) = (
                recall_at(&ranked, judged, threshold, 10),
                recall_at(&ranked, judged, threshold, 100),
                reciprocal_rank_at(&ranked, judged, threshold, 10),
            ) {
                sums.recall_at_10 += r10;
                sums.recall_at_100 += r100;
                sums.mrr_at_10 += rr;
                recall_count += 1;
            }
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();

    let mean = |sum: f64, count: usize| if count == 0 { 0.0 } else { sum / count as f64 };
    Ok(EvalReport {
        queries: sums.queries,
        queries_with_relevant: recall_count,
        ndcg_at_10: mean(sums.ndcg_at_10, ndcg_count),
        recall_at_10: mean(sums.recall_at_10, recall_count),
        recall_at_100: mean(sums.recall_at_100, recall_count),
        mrr_at_10: mean(sums.mrr_at_10, recall_count),
        seconds: started.elapsed().as_secs_f64(),
    })
}
