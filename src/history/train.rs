//! Learns the history attention by next-item prediction: for each training step of a
//! shopper's sequence, the interest built from the query and the items before it should rank
//! the step's item first among the whole catalogue. By default the items the shopper already
//! had are left out of the softmax, as they are left out of the evaluation's rankings. Training stops
//! when nDCG@10 on the validation steps has not improved for a few epochs.

use std::cell::RefCell;
use std::time::Instant;

use candle_core::{Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use super::measure::{HistoryData, QueryUse, Ranker, SequentialMetrics};
use super::{leave_last_out, HistoryTarget, HistoryWeights, SequenceSplit};
use super::HistoryError;

#[derive(Debug, Clone, Serialize)]
pub struct HistoryTrainOptions {
    pub seed: u64,
    pub max_epochs: usize,
    pub patience: usize,
    pub batch_size: usize,
    /// Training steps drawn per epoch (all of them when there are fewer), so an epoch over a
    /// large log stays short and validation comes often.
    pub steps_per_epoch: usize,
    /// History items per step, the most recent ones.
    pub max_items: usize,
    /// AdamW learning rate of `W_hist`.
    pub learning_rate: f64,
    /// AdamW learning rate of the sharpness, recency and mix scalars.
    pub scalar_learning_rate: f64,
    pub temperature: f64,
    /// Chance that a step's query is hidden during training, so the weights also learn to
    /// rank from history alone.
    pub query_dropout: f64,
    /// Leave the items a shopper already had out of the softmax, as the evaluation leaves
    /// them out of its rankings. Turn it off where shoppers come back to the same items, so
    /// the weights learn to predict those returns.
    pub exclude_seen: bool,
}

impl Default for HistoryTrainOptions {
    fn default() -> Self {
        Self {
            seed: 42,
            max_epochs: 20,
            patience: 3,
            batch_size: 256,
            steps_per_epoch: 16_384,
            max_items: 20,
            learning_rate: 1e-4,
            scalar_learning_rate: 1e-2,
            temperature: 0.05,
            query_dropout: 0.5,
            exclude_seen: true,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryEpoch {
    pub epoch: usize,
    pub loss: f64,
    pub validation: SequentialMetrics,
}

/// Written beside the weights as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryReport {
    pub options: HistoryTrainOptions,
    pub sequences: usize,
    pub training_steps: usize,
    pub validation_steps: usize,
    /// Validation metrics of the untrained weights.
    pub baseline_validation: SequentialMetrics,
    pub best_validation: SequentialMetrics,
    pub best_epoch: usize,
    pub epochs: Vec<HistoryEpoch>,
    pub checksum: String,
    pub seconds: f64,
}

/// Trains history weights on the training steps of `data` and returns the best ones on the
/// validation steps, which are measured with their queries when they have them. Test steps
/// are never read.
pub fn train_history(data: &HistoryData, options: &HistoryTrainOptions) -> Result<(HistoryWeights, HistoryReport), HistoryError> {
    let started = Instant::now();
    let device = data.items.device();
    let targets = leave_last_out(&data.sequences);
    let of_split = |split| targets.iter().copied().filter(|target| target.split == split).collect::<Vec<HistoryTarget>>();
    let (training, validation) = (of_split(SequenceSplit::Train), of_split(SequenceSplit::Validation));
    if training.is_empty() || validation.is_empty() {
        return Err(HistoryError::NotEnoughData(format!(
            "the sequences give {} training and {} validation steps; training needs both, so at least one shopper with three or more events",
            training.len(),
            validation.len()
        )));
    }

    let untrained = HistoryWeights::untrained(data.items.dim(1)?, options.max_items, device)?;
    let validate = |weights: &HistoryWeights| data.measure(&validation, &Ranker::Attention(weights), true, options.max_items, options.exclude_seen);
    let baseline = validate(&untrained)?;
    tracing::info!(training = training.len(), validation = validation.len(), baseline_ndcg_at_10 = baseline.ndcg_at_10, "history training starts");

    let vars = [&untrained.w_hist, &untrained.sharpness, &untrained.recency, &untrained.mix].map(|tensor| Var::from_tensor(tensor));
    let vars = vars.into_iter().collect::<Result<Vec<Var>, _>>()?;
    let weights = HistoryWeights {
        w_hist: vars[0].as_tensor().clone(),
        sharpness: vars[1].as_tensor().clone(),
        recency: vars[2].as_tensor().clone(),
        mix: vars[3].as_tensor().clone(),
    };
    let adam = |vars: Vec<Var>, lr: f64| AdamW::new(vars, ParamsAdamW { lr, weight_decay: 0.0, ..ParamsAdamW::default() });
    let mut matrix_optimizer = adam(vec![vars[0].clone()], options.learning_rate)?;
    let mut scalar_optimizer = adam(vars[1..].to_vec(), options.scalar_learning_rate)?;

    let rng = RefCell::new(StdRng::seed_from_u64(options.seed));
    let mut order = training.clone();
    let (mut best, mut best_epoch, mut best_weights) = (baseline, 0, untrained.clone());
    let mut epochs = Vec::new();
    for epoch in 1..=options.max_epochs {
        order.shuffle(&mut *rng.borrow_mut());
        let (mut loss_sum, mut batches) = (0.0, 0);
        for chunk in order[..order.len().min(options.steps_per_epoch)].chunks(options.batch_size) {
            let loss = next_item_loss(data, &weights, chunk, options, QueryUse::DropWith(options.query_dropout, &rng))?;
            let gradients = loss.backward()?;
            matrix_optimizer.step(&gradients)?;
            scalar_optimizer.step(&gradients)?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?);
            batches += 1;
        }

        let frozen = weights.detached()?;
        let metrics = validate(&frozen)?;
        let loss = loss_sum / f64::from(batches.max(1));
        tracing::info!(epoch, loss, validation_ndcg_at_10 = metrics.ndcg_at_10, "history epoch finished");
        epochs.push(HistoryEpoch { epoch, loss, validation: metrics });
        if metrics.ndcg_at_10 > best.ndcg_at_10 {
            (best, best_epoch, best_weights) = (metrics, epoch, frozen);
        } else if epoch - best_epoch >= options.patience {
            break;
        }
    }

    let report = HistoryReport {
        options: options.clone(),
        sequences: data.sequences.len(),
        training_steps: training.len(),
        validation_steps: validation.len(),
        baseline_validation: baseline,
        best_validation: best,
        best_epoch,
        epochs,
        checksum: best_weights.checksum()?,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((best_weights, report))
}

/// Softmax cross-entropy of each step's item over the catalogue, with the items the shopper
/// already had masked out (unless one of them is the step's item) when `exclude_seen` is on.
fn next_item_loss(data: &HistoryData, weights: &HistoryWeights, targets: &[HistoryTarget], options: &HistoryTrainOptions, queries: QueryUse) -> Result<Tensor, HistoryError> {
    let device = data.items.device();
    let batch = data.batch(targets, options.max_items, queries)?;
    let catalogue = data.items.dim(0)?;

    let mut mask = vec![0f32; targets.len() * catalogue];
    for (row, (seen, target)) in batch.seen.iter().zip(&batch.targets).enumerate().filter(|_| options.exclude_seen) {
        for &item in seen.iter().filter(|item| *item != target) {
            mask[row * catalogue + item] = -1e9;
        }
    }
    let mask = Tensor::from_vec(mask, (targets.len(), catalogue), device)?;

    let interest = weights.attend(&batch.queries, &batch.has_query, &batch.items, &batch.mask)?.vectors;
    let logits = ((interest.matmul(&data.items.t()?)? / options.temperature)? + mask)?;
    let log_probabilities = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = log_probabilities.gather(&Tensor::new(batch.targets.iter().map(|item| *item as u32).collect::<Vec<_>>(), device)?.unsqueeze(1)?, 1)?;
    Ok(picked.mean_all()?.neg()?)
}
