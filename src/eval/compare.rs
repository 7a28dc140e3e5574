//! Side-by-side evaluation of retrieval methods on the same catalogue and queries: BM25, CLS
//! pooling, mean pooling (the untrained head), a trained head, and BM25 fused with the best
//! vector method by reciprocal rank fusion. Vector methods rank the whole catalogue exactly, so
//! the numbers measure the representations, not the approximate index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::{chart, ndcg_at, read_judgments, recall_at, reciprocal_rank_at};
use crate::catalog::{read_catalog, CatalogError, FieldSelection, LexicalIndex};
use crate::config::Settings;
use crate::encoder::TokenStates;
use crate::pooling::{l2_normalize, masked_mean, AttentionHead, PoolingError};
use crate::service::{load_model, ServiceError};
use crate::train::{in_split, item_features, query_features, Split, SplitFractions};

/// Depth of every ranking; recall@100 needs 100.
const DEPTH: usize = 100;

#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub head: Option<PathBuf>,
    pub split: Split,
    pub seed: u64,
    pub threshold: f64,
    pub limit: Option<usize>,
    pub cache_dir: PathBuf,
    /// Output directory of the Markdown table and PNG chart; nothing is written when None.
    pub out_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MethodReport {
    pub name: String,
    pub queries: usize,
    pub ndcg_at_10: f64,
    pub recall_at_1: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
    pub mrr_at_10: f64,
}

/// Fuses rankings of catalogue rows by reciprocal rank fusion, best first (the same fusion
/// as hybrid serving).
pub fn reciprocal_rank_fusion(rankings: &[&[usize]], depth: usize) -> Vec<usize> {
    crate::service::fuse(rankings, depth)
}

/// Returns the best `depth` item rows per query by inner product of unit vectors, best first
/// (ties broken by the lower row).
pub fn rank_exact(queries: &Tensor, items: &Tensor, depth: usize) -> Result<Vec<Vec<usize>>, PoolingError> {
    let mut ranked = Vec::with_capacity(queries.dim(0)?);
    let rows = queries.dim(0)?;
    for start in (0..rows).step_by(256) {
        let chunk = queries.narrow(0, start, 256.min(rows - start))?;
        for row in chunk.matmul(&items.t()?)?.to_vec2::<f32>()? {
            let mut positions: Vec<usize> = (0..row.len()).collect();
            let keep = depth.min(row.len());
            if keep < row.len() {
                positions.select_nth_unstable_by(keep, |a, b| row[*b].total_cmp(&row[*a]));
                positions.truncate(keep);
            }
            positions.sort_by(|a, b| row[*b].total_cmp(&row[*a]).then(a.cmp(b)));
            ranked.push(positions);
        }
    }
    Ok(ranked)
}

fn score(name: &str, rankings: &[Vec<usize>], judged: &[HashMap<String, f64>], threshold: f64) -> MethodReport {
    let (mut ndcg, mut r1, mut r10, mut r100, mut mrr, mut graded, mut relevant) = (0.0, 0.0, 0.0, 0.0, 0.0, 0, 0);
    for (ranking, grades) in rankings.iter().zip(judged) {
        let ids: Vec<String> = ranking.iter().map(|row| row.to_string()).collect();
        if let Some(value) = ndcg_at(&ids, grades, 10) {
            ndcg += value;
            graded += 1;
        }
        if let (Some(first), Some(a), Some(b), Some(c)) = (
            recall_at(&ids, grades, threshold, 1),
            recall_at(&ids, grades, threshold, 10),
            recall_at(&ids, grades, threshold, 100),
            reciprocal_rank_at(&ids, grades, threshold, 10),
        ) {
            r1 += first;
            r10 += a;
            r100 += b;
            mrr += c;
            relevant += 1;
        }
    }
    let mean = |sum: f64, count: usize| if count == 0 { 0.0 } else { sum / count as f64 };
    MethodReport {
        name: name.to_string(),
        queries: rankings.len(),
        ndcg_at_10: mean(ndcg, graded),
        recall_at_1: mean(r1, relevant),
        recall_at_10: mean(r10, relevant),
        recall_at_100: mean(r100, relevant),
        mrr_at_10: mean(mrr, relevant),
    }
}

/// Renders reports as a Markdown table.
pub fn markdown_table(methods: &[MethodReport]) -> String {
    let mut table = String::from("| method | queries | nDCG@10 | recall@1 | recall@10 | recall@100 | MRR@10 |\n|---|---|---|---|---|---|---|\n");
    for method in methods {
        table.push_str(&format!(
            "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
            method.name, method.queries, method.ndcg_at_10, method.recall_at_1, method.recall_at_10, method.recall_at_100, method.mrr_at_10
        ));
    }
    table
}

/// Evaluates every method on the judged queries of `options.split` and returns their reports.
pub fn compare_methods(settings: &Settings, catalog: &Path, judgments: &Path, options: &CompareOptions) -> Result<Vec<MethodReport>, ServiceError> {
    let started = Instant::now();
    let model = load_model(settings)?;
    let encoder = &model.encoder;
    let fields = FieldSelection { id_field: settings.catalog.id_field.clone(), text_fields: settings.catalog.text_fields.clone() };
    let items = read_catalog(catalog, &fields)?;
    let row_of: HashMap<&str, usize> = items.iter().enumerate().map(|(row, item)| (item.id.as_str(), row)).collect();

    // Grades are re-keyed by catalogue row, and judged ids missing from the catalogue dropped.
    let mut query_texts = Vec::new();
    let mut judged = Vec::new();
    for (query, grades) in read_judgments(judgments)?.queries {
        if !in_split(&query, options.split, options.seed, SplitFractions::default()) {
            continue;
        }
        let grades: HashMap<String, f64> =
            grades.iter().filter_map(|(id, grade)| row_of.get(id.as_str()).map(|row| (row.to_string(), *grade))).collect();
        if !grades.is_empty() {
            query_texts.push(query);
            judged.push(grades);
        }
    }
    if let Some(limit) = options.limit {
        query_texts.truncate(limit);
        judged.truncate(limit);
    }
    if query_texts.is_empty() {
        return Err(CatalogError::InvalidCatalog {
            path: judgments.to_path_buf(),
            line: 0,
            message: format!("no judged query of the {:?} split refers to an item of {}", options.split, catalog.display()),
        }
        .into());
    }

    let texts: Vec<String> = items.iter().map(|item| item.text.clone()).collect();
    let item_features = item_features(encoder, &texts, &options.cache_dir, &model.fingerprint)?;
    let query_features = query_features(encoder, &query_texts, &options.cache_dir, &model.fingerprint)?;
    let states = TokenStates { hidden: query_features.states.to_dtype(DType::F32)?, mask: query_features.mask.clone() };

    let mut reports = Vec::new();
    let documents: Vec<(u64, &str)> = texts.iter().enumerate().map(|(row, text)| (row as u64, text.as_str())).collect();
    let bm25 = LexicalIndex::build(&documents).map_err(|err| ServiceError::Internal(err.to_string()))?;
    let lexical: Vec<Vec<usize>> = query_texts
        .iter()
        .map(|query| bm25.search(query, DEPTH).map(|keys| keys.into_iter().map(|key| key as usize).collect()))
        .collect::<Result<_, _>>()
        .map_err(|err| ServiceError::Internal(err.to_string()))?;
    reports.push(score("BM25", &lexical, &judged, options.threshold));

    let cls_queries = l2_normalize(&states.hidden.narrow(1, 0, 1)?.squeeze(1)?)?;
    let cls_ranked = rank_exact(&cls_queries, &l2_normalize(&item_features.cls)?, DEPTH)?;
    reports.push(score("CLS pooling", &cls_ranked, &judged, options.threshold));

    let mean_queries = l2_normalize(&masked_mean(&states.hidden, &states.mask)?)?;
    let mean_items = l2_normalize(&item_features.means)?;
    let mean_ranked = rank_exact(&mean_queries, &mean_items, DEPTH)?;
    reports.push(score("mean pooling (untrained head)", &mean_ranked, &judged, options.threshold));

    let mut best_vector = ("mean pooling", mean_ranked);
    if let Some(path) = &options.head {
        let head = AttentionHead::load(path, encoder.hidden_size(), encoder.device())?;
        let vectors = head.pool_queries(&states)?.vectors;
        let trained_items = l2_normalize(&item_features.means.matmul(&head.w_score.t()?)?)?;
        let trained_ranked = rank_exact(&vectors, &trained_items, DEPTH)?;
        reports.push(score("dynamic-attention head (trained)", &trained_ranked, &judged, options.threshold));
        best_vector = ("trained head", trained_ranked);
    }

    let fused: Vec<Vec<usize>> =
        lexical.iter().zip(&best_vector.1).map(|(a, b)| reciprocal_rank_fusion(&[a.as_slice(), b.as_slice()], DEPTH)).collect();
    reports.push(score(&format!("hybrid: BM25 + {} (RRF)", best_vector.0), &fused, &judged, options.threshold));
    tracing::info!(queries = query_texts.len(), seconds = started.elapsed().as_secs_f64(), "evaluation finished");

    if let Some(dir) = &options.out_dir {
        std::fs::create_dir_all(dir).map_err(|source| CatalogError::Io { path: dir.clone(), source })?;
        let table = markdown_table(&reports);
        let markdown = dir.join("eval.md");
        std::fs::write(&markdown, &table).map_err(|source| CatalogError::Io { path: markdown.clone(), source })?;
        let split = format!("{:?}", options.split).to_lowercase();
        let title = format!("{} ({} queries, {split} split)", catalog.file_name().and_then(|name| name.to_str()).unwrap_or("catalogue"), query_texts.len());
        if let Err(message) = chart::draw(&dir.join("eval.png"), &title, &reports) {
            tracing::warn!(%message, "chart not drawn; the Markdown table is still written");
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_rewards_agreement() {
        let fused = reciprocal_rank_fusion(&[&[1, 2, 3], &[4, 2, 5]], 10);
        assert_eq!(fused[0], 2);
        assert_eq!(fused.len(), 5);
    }

    #[test]
    fn fusion_respects_depth() {
        assert_eq!(reciprocal_rank_fusion(&[&[1, 2, 3]], 2), vec![1, 2]);
    }
}
