//! `attnrec train`: learns the pooling head (`W_attn`, `W_q`, `W_score`) from relevance
//! judgments with the encoder frozen.
//!
//! Each example pairs a training query with one item judged relevant to it. The loss is a
//! softmax cross-entropy over that item, the other examples' items in the batch (in-batch
//! negatives) and hard negatives. Hard negatives are items that the untrained head (mean
//! pooling) ranks high for the query but that are judged irrelevant or not judged at all. Examples are weighted by their grade.
//! Training stops early when nDCG@10 on the validation queries has not improved for a few
//! epochs, and the best head is kept. Test queries are never read.

mod feedback;
mod features;
mod history;
mod split;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

pub use feedback::{event_grade, feedback_training_data};
pub use history::{prepare_history, train_history_from_feedback, HistoryEvent, PreparedHistory};
pub use features::{item_features, query_features, ItemFeatures, QueryFeatures};
pub use split::{in_split, split_of, Split, SplitFractions};

use crate::catalog::{read_catalog, FieldSelection, Item};
use crate::config::Settings;
use crate::encoder::TokenStates;
use crate::eval::{ndcg_at, rank_exact, read_judgments, Judgments};
use crate::pooling::{l2_normalize, AttentionHead, PoolingError};
use crate::service::{load_model, ServiceError};

/// Hyper-parameters of a training run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    pub seed: u64,
    pub max_epochs: usize,
    /// Epochs without a better validation nDCG@10 before training stops.
    pub patience: usize,
    pub batch_size: usize,
    /// Learning rate of AdamW for `W_q` and `W_score`.
    pub learning_rate: f64,
    /// Learning rate of AdamW for `W_attn`. It starts at zero, so attention starts uniform
    /// and needs larger steps than the projections, which start at the identity.
    pub attention_learning_rate: f64,
    pub weight_decay: f64,
    /// Softmax temperature applied to cosine scores.
    pub temperature: f64,
    /// Hard negatives sampled per example in each batch.
    pub hard_negatives: usize,
    /// Top-ranked unjudged or irrelevant items kept per query to sample hard negatives from.
    pub mined_per_query: usize,
    #[serde(skip)]
    pub fractions: SplitFractions,
    pub cache_dir: PathBuf,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            seed: 42,
            max_epochs: 30,
            patience: 3,
            batch_size: 64,
            learning_rate: 3e-6,
            attention_learning_rate: 3e-4,
            weight_decay: 0.01,
            temperature: 0.05,
            hard_negatives: 4,
            mined_per_query: 30,
            fractions: SplitFractions::default(),
            cache_dir: PathBuf::from("var/cache"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub validation_ndcg_at_10: f64,
}

/// Written beside the head as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub options: TrainOptions,
    pub train_queries: usize,
    pub validation_queries: usize,
    pub held_out_test_queries: usize,
    pub examples: usize,
    pub items: usize,
    /// Validation nDCG@10 of the untrained head (mean pooling).
    pub baseline_validation_ndcg_at_10: f64,
    pub best_validation_ndcg_at_10: f64,
    pub best_epoch: usize,
    pub epochs: Vec<EpochRecord>,
    pub head_checksum: String,
    pub seconds: f64,
}

/// One (query, relevant item) pair.
#[derive(Debug, Clone, Copy)]
struct Example {
    query: usize,
    item: usize,
    weight: f32,
}

/// Judged queries resolved to catalogue rows.
struct JudgedQuery {
    text: String,
    /// Catalogue row to grade.
    grades: HashMap<usize, f64>,
    /// Rows with a grade above the lowest grade of the judgments file: the positives. Items
    /// at the lowest grade (irrelevant) or unjudged are negatives.
    relevant: HashSet<usize>,
}

/// Training input of a head: the catalogue and graded (query, item) judgments.
pub struct TrainingData {
    pub items: Vec<Item>,
    pub judgments: Judgments,
    /// The grade that means "not relevant". Judgment files grade irrelevant items too, so
    /// their lowest grade is it; feedback records only positive events, so it is 0 there.
    pub irrelevant_grade: Option<f64>,
    /// Name of the data's source, for messages.
    pub source: String,
}

impl TrainingData {
    /// Reads a catalogue file and a `query,id,relevance` judgments file.
    pub fn from_files(settings: &Settings, catalog: &Path, judgments: &Path) -> Result<Self, ServiceError> {
        let fields = FieldSelection { id_field: settings.catalog.id_field.clone(), text_fields: settings.catalog.text_fields.clone() };
        Ok(Self { items: read_catalog(catalog, &fields)?, judgments: read_judgments(judgments)?, irrelevant_grade: None, source: catalog.display().to_string() })
    }
}

/// Trains a head on files and writes it to `out` (safetensors) with a JSON report beside it.
pub fn train(settings: &Settings, catalog: &Path, judgments: &Path, out: &Path, options: &TrainOptions) -> Result<TrainReport, ServiceError> {
    train_on(settings, TrainingData::from_files(settings, catalog, judgments)?, out, options)
}

/// Trains a head and writes it to `out` (safetensors) with a JSON report beside it.
pub fn train_on(settings: &Settings, data: TrainingData, out: &Path, options: &TrainOptions) -> Result<TrainReport, ServiceError> {
    let started = Instant::now();
    create_parent(out)?;
    let model = load_model(settings)?;
    let encoder = &model.encoder;
    let device = encoder.device().clone();

    let TrainingData { items, judgments: judged, irrelevant_grade, source } = data;
    let row_of: HashMap<&str, usize> = items.iter().enumerate().map(|(row, item)| (item.id.as_str(), row)).collect();
    let (lowest_grade, max_grade) = grade_range(&judged.queries);
    let min_grade = irrelevant_grade.unwrap_or(lowest_grade);

    let weight_of = |grade: f64| if max_grade > min_grade { ((grade - min_grade) / (max_grade - min_grade)) as f32 } else { 1.0 };

    let mut train_queries = Vec::new();
    let mut validation_queries = Vec::new();
    let mut held_out = 0;
    for (text, grades) in &judged.queries {
        let grades: HashMap<usize, f64> = grades.iter().filter_map(|(id, grade)| row_of.get(id.as_str()).map(|row| (*row, *grade))).collect();
        if grades.is_empty() {
            continue;
        }
        let relevant = grades.iter().filter(|(_, grade)| weight_of(**grade) > 0.0).map(|(row, _)| *row).collect();
        let query = JudgedQuery { text: text.clone(), grades, relevant };
        match split_of(text, options.seed, options.fractions) {
            Split::Train => train_queries.push(query),
            Split::Validation => validation_queries.push(query),
            Split::Test | Split::All => held_out += 1,
        }
    }
    tracing::info!(train = train_queries.len(), validation = validation_queries.len(), held_out, "queries split");
    let examples: Vec<Example> = train_queries
        .iter()
        .enumerate()
        .flat_map(|(query, judged)| {
            judged.grades.iter().filter(|(_, grade)| weight_of(**grade) > 0.0).map(move |(item, grade)| Example { query, item: *item, weight: weight_of(*grade) })
        })
        .collect();
    if examples.is_empty() || validation_queries.is_empty() {
        let distinct = train_queries.len() + validation_queries.len() + held_out;
        return Err(ServiceError::invalid(
            "judgments",
            format!(
                "{} has {distinct} distinct queries with items in the catalogue, giving {} training examples and {} validation \
                 queries; training needs both, so about 10 or more distinct queries (10 % of them are held for validation \
                 and 20 % for testing)",
                source,
                examples.len(),
                validation_queries.len(),
            ),
        ));
    }

    let texts: Vec<String> = items.iter().map(|item| item.text.clone()).collect();
    let item_means = item_features(encoder, &texts, &options.cache_dir, &model.fingerprint)?.means;
    let query_texts: Vec<String> = train_queries.iter().chain(&validation_queries).map(|query| query.text.clone()).collect();
    let queries = query_features(encoder, &query_texts, &options.cache_dir, &model.fingerprint)?;
    let train_rows: Vec<u32> = (0..train_queries.len() as u32).collect();
    let validation_rows: Vec<u32> = (train_queries.len() as u32..query_texts.len() as u32).collect();

    let untrained = AttentionHead::untrained(encoder.hidden_size(), &device)?;
    let mined = mine_hard_negatives(&untrained, &queries, &train_rows, &item_means, &train_queries, options.mined_per_query)?;
    let baseline = validation_ndcg(&untrained, &queries, &validation_rows, &item_means, &validation_queries)?;
    tracing::info!(baseline_ndcg_at_10 = baseline, examples = examples.len(), "training starts");

    let parameters = [Var::from_tensor(&untrained.w_attn)?, Var::from_tensor(&untrained.w_q)?, Var::from_tensor(&untrained.w_score)?];
    let head = AttentionHead {
        w_attn: parameters[0].as_tensor().clone(),
        w_q: parameters[1].as_tensor().clone(),
        w_score: parameters[2].as_tensor().clone(),
    };
    let mut attention_optimizer = AdamW::new(
        vec![parameters[0].clone()],
        ParamsAdamW { lr: options.attention_learning_rate, weight_decay: options.weight_decay, ..ParamsAdamW::default() },
    )?;
    let mut projection_optimizer = AdamW::new(
        parameters[1..].to_vec(),
        ParamsAdamW { lr: options.learning_rate, weight_decay: options.weight_decay, ..ParamsAdamW::default() },
    )?;

    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let (mut best_ndcg, mut best_epoch, mut best_head) = (baseline, 0, untrained.clone());
    let mut epochs = Vec::new();
    let bar = ProgressBar::new(options.max_epochs as u64);
    bar.set_style(ProgressStyle::with_template("training epoch {pos}/{len} [{bar:30}] {msg}").expect("valid template"));

    for epoch in 1..=options.max_epochs {
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        let mut batches = 0;
        for chunk in order.chunks(options.batch_size) {
            let batch: Vec<Example> = chunk.iter().map(|&position| examples[position]).collect();
            let loss = batch_loss(&head, &queries, &item_means, &batch, &mined, &train_queries, options, &mut rng)?;
            let gradients = loss.backward()?;
            attention_optimizer.step(&gradients)?;
            projection_optimizer.step(&gradients)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            batches += 1;
        }

        let frozen = AttentionHead { w_attn: head.w_attn.detach(), w_q: head.w_q.detach(), w_score: head.w_score.detach() };
        let ndcg = validation_ndcg(&frozen, &queries, &validation_rows, &item_means, &validation_queries)?;
        let loss = loss_sum / batches.max(1) as f64;
        epochs.push(EpochRecord { epoch, loss, validation_ndcg_at_10: ndcg });
        bar.set_message(format!("loss {loss:.4} validation nDCG@10 {ndcg:.4} (best {:.4})", best_ndcg.max(ndcg)));
        bar.inc(1);
        tracing::debug!(epoch, loss, ndcg, "epoch finished");

        if ndcg > best_ndcg {
            best_ndcg = ndcg;
            best_epoch = epoch;
            best_head = AttentionHead { w_attn: frozen.w_attn.copy()?, w_q: frozen.w_q.copy()?, w_score: frozen.w_score.copy()? };
        } else if epoch - best_epoch >= options.patience {
            break;
        }
    }
    bar.finish_and_clear();

    best_head.save(out)?;
    let report = TrainReport {
        options: options.clone(),
        train_queries: train_queries.len(),
        validation_queries: validation_queries.len(),
        held_out_test_queries: held_out,
        examples: examples.len(),
        items: items.len(),
        baseline_validation_ndcg_at_10: baseline,
        best_validation_ndcg_at_10: best_ndcg,
        best_epoch,
        epochs,
        head_checksum: best_head.checksum()?,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_report(out, &report)?;
    Ok(report)
}

/// Creates the folder of an output file before a long run, so a missing folder does not
/// waste it.
fn create_parent(out: &Path) -> Result<(), ServiceError> {
    if let Some(folder) = out.parent().filter(|folder| !folder.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|source| crate::catalog::CatalogError::Io { path: folder.to_path_buf(), source })?;
    }
    Ok(())
}

/// Writes a training report as JSON beside the weights file `out`.
fn write_report(out: &Path, report: &impl Serialize) -> Result<(), ServiceError> {
    let report_path = out.with_extension("json");
    std::fs::write(&report_path, serde_json::to_string_pretty(report).expect("report serializes"))
        .map_err(|source| crate::catalog::CatalogError::Io { path: report_path, source })?;
    Ok(())
}

fn grade_range(queries: &[(String, HashMap<String, f64>)]) -> (f64, f64) {
    let grades = queries.iter().flat_map(|(_, grades)| grades.values().copied());
    grades.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), grade| (low.min(grade), high.max(grade)))
}

/// Token states of the given query rows as f32.
fn query_states(queries: &QueryFeatures, rows: &[u32]) -> Result<TokenStates, PoolingError> {
    let index = Tensor::new(rows, queries.states.device())?;
    Ok(TokenStates {
        hidden: queries.states.index_select(&index, 0)?.to_dtype(DType::F32)?,
        mask: queries.mask.index_select(&index, 0)?,
    })
}

/// Unit item vectors `normalize(W_score mean)` for item rows (all items when `rows` is None).
fn item_vectors(head: &AttentionHead, means: &Tensor, rows: Option<&[u32]>) -> Result<Tensor, PoolingError> {
    let selected = match rows {
        Some(rows) => means.index_select(&Tensor::new(rows, means.device())?, 0)?,
        None => means.clone(),
    };
    Ok(l2_normalize(&selected.matmul(&head.w_score.t()?)?)?)
}

/// Scores every item for the given query rows and returns, per row, the `keep` best item rows.
fn top_items(head: &AttentionHead, queries: &QueryFeatures, rows: &[u32], items: &Tensor, keep: usize) -> Result<Vec<Vec<usize>>, PoolingError> {
    let mut ranked = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(256) {
        let vectors = head.pool_queries(&query_states(queries, chunk)?)?.vectors;
        ranked.extend(rank_exact(&vectors, items, keep)?);
    }
    Ok(ranked)
}

fn mine_hard_negatives(
    head: &AttentionHead,
    queries: &QueryFeatures,
    rows: &[u32],
    means: &Tensor,
    judged: &[JudgedQuery],
    keep: usize,
) -> Result<Vec<Vec<usize>>, PoolingError> {
    let items = item_vectors(head, means, None)?;
    let ranked = top_items(head, queries, rows, &items, keep * 2)?;
    Ok(ranked
        .into_iter()
        .zip(judged)
        .map(|(candidates, query)| candidates.into_iter().filter(|item| !query.relevant.contains(item)).take(keep).collect())
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn batch_loss(
    head: &AttentionHead,
    queries: &QueryFeatures,
    means: &Tensor,
    batch: &[Example],
    mined: &[Vec<usize>],
    judged: &[JudgedQuery],
    options: &TrainOptions,
    rng: &mut StdRng,
) -> Result<Tensor, PoolingError> {
    let device = means.device();
    let query_rows: Vec<u32> = batch.iter().map(|example| example.query as u32).collect();
    let mut candidates: Vec<u32> = batch.iter().map(|example| example.item as u32).collect();
    for example in batch {
        let pool = &mined[example.query];
        for _ in 0..options.hard_negatives.min(pool.len()) {
            candidates.push(pool[rng.random_range(0..pool.len())] as u32);
        }
    }

    // A candidate that is also relevant to a row's query (other than the row's own target)
    // is not a negative for that row, so it is masked out of the softmax.
    let mut mask = vec![0f32; batch.len() * candidates.len()];
    for (row, example) in batch.iter().enumerate() {
        let relevant = &judged[example.query].relevant;
        for (column, item) in candidates.iter().enumerate() {
            let item = *item as usize;
            if column != row && (item == example.item || relevant.contains(&item)) {
                mask[row * candidates.len() + column] = -1e9;
            }
        }
    }
    let mask = Tensor::from_vec(mask, (batch.len(), candidates.len()), device)?;

    let vectors = head.pool_queries(&query_states(queries, &query_rows)?)?.vectors;
    let items = item_vectors(head, means, Some(&candidates))?;
    let logits = ((vectors.matmul(&items.t()?)? / options.temperature)? + mask)?;
    let log_probabilities = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let targets = Tensor::new((0..batch.len() as u32).collect::<Vec<_>>(), device)?.unsqueeze(1)?;
    let picked = log_probabilities.gather(&targets, 1)?.squeeze(1)?;
    let weights = Tensor::new(batch.iter().map(|example| example.weight).collect::<Vec<_>>(), device)?;
    let total = weights.sum_all()?;
    Ok(((picked * &weights)?.sum_all()?.neg()? / total)?)
}

/// Mean nDCG@10 over validation queries, ranking the whole catalogue exactly.
fn validation_ndcg(head: &AttentionHead, queries: &QueryFeatures, rows: &[u32], means: &Tensor, judged: &[JudgedQuery]) -> Result<f64, PoolingError> {
    let items = item_vectors(head, means, None)?;
    let ranked = top_items(head, queries, rows, &items, 10)?;
    let mut total = 0.0;
    let mut counted = 0;
    for (ranking, query) in ranked.iter().zip(judged) {
        let ids: Vec<String> = ranking.iter().map(|row| row.to_string()).collect();
        let grades: HashMap<String, f64> = query.grades.iter().map(|(row, grade)| (row.to_string(), *grade)).collect();
        if let Some(ndcg) = ndcg_at(&ids, &grades, 10) {
            total += ndcg;
            counted += 1;
        }
    }
    Ok(if counted == 0 { 0.0 } else { total / counted as f64 })
}
