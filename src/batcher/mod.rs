//! The encoding pipeline of the server: a small pool of tokenizer threads feeds one inference
//! thread that owns the model and forms batches by token budget.
//!
//! Nothing here takes a lock around the model: the inference thread is its only user, and
//! callers talk to it through bounded channels, so a burst of requests is refused instead of
//! queued without bound.

mod queue;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

pub use queue::{BatchLimits, BatchQueue, PendingText};

pub use crate::encoder::TextKind;
use crate::encoder::{Encoder, EncoderError, TextTokenizer, TokenizedText};
use crate::metrics::METRICS;
use crate::pooling::{AttentionHead, PoolingError};


/// A pooled text.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// Unit vector of the encoder's width.
    pub vector: Vec<f32>,
    /// Attention per token (queries only, empty for items).
    pub attention: Vec<f32>,
    pub tokens: TokenizedText,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The queues are full; the caller should retry later.
    #[error("the encoder queue is full")]
    Overloaded,
    /// The pipeline has stopped (shutdown or a crashed thread).
    #[error("the encoder pipeline has stopped")]
    Stopped,
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error(transparent)]
    Pooling(#[from] PoolingError),
}

#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub limits: BatchLimits,
    pub max_wait: Duration,
    pub tokenizer_threads: usize,
    /// Capacity of each internal queue; a full queue rejects with `Overloaded`.
    pub queue_capacity: usize,
}

type Reply = oneshot::Sender<Result<Embedding, EngineError>>;

struct TokenizeJob {
    text: String,
    kind: TextKind,
    reply: Reply,
    span: tracing::Span,
}

struct InferenceJob {
    tokens: TokenizedText,
    kind: TextKind,
    reply: Reply,
    enqueued_at: Instant,
    span: tracing::Span,
}

impl PendingText for InferenceJob {
    fn tokens(&self) -> usize {
        self.tokens.len()
    }

    fn is_cancelled(&self) -> bool {
        self.reply.is_closed()
    }
}

/// A handle to the running pipeline. Cloning it is cheap; the threads stop when every handle
/// is dropped.
#[derive(Clone)]
pub struct Engine {
    tokenize_tx: Sender<TokenizeJob>,
    tokenizer: Arc<TextTokenizer>,
    dimensions: usize,
    device: String,
    ready: Arc<std::sync::atomic::AtomicBool>,
    _threads: Arc<Vec<JoinHandle<()>>>,
}

impl Engine {
    /// Starts the tokenizer threads and the inference thread, which first runs a warm-up
    /// pass for each batch shape and then marks the engine ready.
    pub fn start(encoder: Encoder, head: AttentionHead, settings: EngineSettings) -> Self {
        let (tokenize_tx, tokenize_rx) = crossbeam_channel::bounded::<TokenizeJob>(settings.queue_capacity);
        let (infer_tx, infer_rx) = crossbeam_channel::bounded::<InferenceJob>(settings.queue_capacity);
        let tokenizer = encoder.tokenizer().clone();
        let dimensions = encoder.hidden_size();
        let device = encoder.device_label();
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));

        let mut threads = Vec::new();
        for worker in 0..settings.tokenizer_threads.max(1) {
            let (rx, tx, tokenizer) = (tokenize_rx.clone(), infer_tx.clone(), tokenizer.clone());
            let handle = std::thread::Builder::new()
                .name(format!("attnrec-tokenize-{worker}"))
                .spawn(move || tokenize_loop(&tokenizer, rx, tx))
                .expect("thread spawns");
            threads.push(handle);
        }
        drop(infer_tx);

        let inference_ready = ready.clone();
        let handle = std::thread::Builder::new()
            .name("attnrec-inference".into())
            .spawn(move || {
                let owner = InferenceOwner { encoder, head, settings };
                owner.warm_up();
                inference_ready.store(true, std::sync::atomic::Ordering::Release);
                owner.run(infer_rx);
            })
            .expect("thread spawns");
        threads.push(handle);

        Self { tokenize_tx, tokenizer, dimensions, device, ready, _threads: Arc::new(threads) }
    }

    /// Tokenizes, encodes and pools one text. Dropping the returned future before it
    /// completes withdraws the text, and it is skipped before its forward pass.
    pub async fn embed(&self, text: String, kind: TextKind) -> Result<Embedding, EngineError> {
        let (reply, result) = oneshot::channel();
        let job = TokenizeJob { text, kind, reply, span: tracing::Span::current() };
        match self.tokenize_tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(EngineError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(EngineError::Stopped),
        }
        result.await.map_err(|_| EngineError::Stopped)?
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn tokenizer(&self) -> &Arc<TextTokenizer> {
        &self.tokenizer
    }

    /// True once the warm-up passes have run.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }
}

fn tokenize_loop(tokenizer: &TextTokenizer, jobs: Receiver<TokenizeJob>, inference: Sender<InferenceJob>) {
    for job in jobs {
        if job.reply.is_closed() {
            continue;
        }
        let started = Instant::now();
        let tokens = match tokenizer.tokenize(&job.text, job.kind) {
            Ok(tokens) => tokens,
            Err(err) => {
                let _ = job.reply.send(Err(err.into()));
                continue;
            }
        };
        METRICS.tokenize_seconds.observe(started.elapsed().as_secs_f64());

        let next = InferenceJob { tokens, kind: job.kind, reply: job.reply, enqueued_at: Instant::now(), span: job.span };
        match inference.try_send(next) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                METRICS.rejected.with_label_values(&["queue_full"]).inc();
                let _ = job.reply.send(Err(EngineError::Overloaded));
            }
            Err(TrySendError::Disconnected(job)) => {
                let _ = job.reply.send(Err(EngineError::Stopped));
            }
        }
    }
}

struct InferenceOwner {
    encoder: Encoder,
    head: AttentionHead,
    settings: EngineSettings,
}

impl InferenceOwner {
    fn run(&self, jobs: Receiver<InferenceJob>) {
        let mut queue = BatchQueue::default();
        let mut open = true;
        while open || !queue.is_empty() {
            if queue.is_empty() {
                match jobs.recv() {
                    Ok(job) => queue.push(job),
                    Err(_) => break,
                }
            }

            // The oldest text waits at most max_wait for others to share its forward pass.
            let deadline = queue.oldest().map(|job| job.enqueued_at + self.settings.max_wait).unwrap_or_else(Instant::now);
            while open && !queue.is_full(&self.settings.limits) {
                match jobs.recv_deadline(deadline) {
                    Ok(job) => queue.push(job),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
            }

            let cancelled = queue.remove_cancelled();
            if !cancelled.is_empty() {
                METRICS.rejected.with_label_values(&["client_disconnected"]).inc_by(cancelled.len() as u64);
            }
            METRICS.queue_depth_observed.observe(queue.len() as f64);
            let batch = queue.next_batch(&self.settings.limits);
            METRICS.queue_depth.set(queue.len() as i64);
            if !batch.is_empty() {
                self.run_batch(batch);
            }
        }
        tracing::info!("inference thread stopped");
    }

    fn run_batch(&self, batch: Vec<InferenceJob>) {
        let started = Instant::now();
        for job in &batch {
            METRICS.queue_wait_seconds.observe(started.duration_since(job.enqueued_at).as_secs_f64());
        }
        let longest = batch.iter().map(|job| job.tokens.len()).max().unwrap_or(0);
        let span = tracing::debug_span!("forward", batch_size = batch.len(), padded_tokens = batch.len() * longest);
        let _entered = span.enter();

        let texts: Vec<&TokenizedText> = batch.iter().map(|job| &job.tokens).collect();
        match self.encode(&texts, &batch) {
            Ok(embeddings) => {
                for (job, embedding) in batch.into_iter().zip(embeddings) {
                    let _ = job.reply.send(Ok(embedding));
                }
            }
            Err(err) => {
                let requests: Vec<String> = batch.iter().map(|job| format!("{:?}", job.span.id())).collect();
                tracing::error!(error = %err, batch_size = batch.len(), ?requests, "forward pass failed");
                METRICS.rejected.with_label_values(&["encoder_error"]).inc_by(batch.len() as u64);
                for job in batch {
                    let _ = job.reply.send(Err(EngineError::Stopped));
                }
            }
        }

        METRICS.forward_seconds.observe(started.elapsed().as_secs_f64());
    }

    fn encode(&self, texts: &[&TokenizedText], batch: &[InferenceJob]) -> Result<Vec<Embedding>, EngineError> {
        let longest = texts.iter().map(|text| text.len()).max().unwrap_or(0);
        METRICS.batch_padded_tokens.observe((texts.len() * longest) as f64);
        METRICS.batch_size.observe(texts.len() as f64);

        let states = self.encoder.forward(texts)?;
        let has_queries = batch.iter().any(|job| job.kind == TextKind::Query);
        let has_items = batch.iter().any(|job| job.kind == TextKind::Item);
        let queries = if has_queries { Some(self.head.pool_queries(&states)?) } else { None };
        let items = if has_items { Some(self.head.pool_items(&states)?.to_vec2::<f32>().map_err(PoolingError::from)?) } else { None };
        let query_vectors = queries.as_ref().map(|q| q.vectors.to_vec2::<f32>()).transpose().map_err(PoolingError::from)?;
        let attention = queries.as_ref().map(|q| q.attention.to_vec2::<f32>()).transpose().map_err(PoolingError::from)?;

        let mut embeddings = Vec::with_capacity(batch.len());
        for (row, job) in batch.iter().enumerate() {
            let embedding = match job.kind {
                TextKind::Query => Embedding {
                    vector: query_vectors.as_ref().expect("queries pooled")[row].clone(),
                    attention: attention.as_ref().expect("queries pooled")[row][..job.tokens.len()].to_vec(),
                    tokens: job.tokens.clone(),
                },
                TextKind::Item => Embedding {
                    vector: items.as_ref().expect("items pooled")[row].clone(),
                    attention: Vec::new(),
                    tokens: job.tokens.clone(),
                },
            };
            embeddings.push(embedding);
        }
        Ok(embeddings)
    }

    /// Runs one forward pass per length class (powers of two up to the maximum length), so
    /// the first real request does not pay for first-touch allocations.
    fn warm_up(&self) {
        let started = Instant::now();
        let tokenizer = self.encoder.tokenizer();
        let max_tokens = tokenizer.max_tokens();
        let filler = "warm up text ".repeat(max_tokens);
        let Ok(full) = tokenizer.tokenize(&filler, TextKind::Query) else { return };

        let mut length = 8;
        loop {
            let length_now = length.min(max_tokens).min(full.len());
            let mut text = full.clone();
            text.ids.truncate(length_now);
            text.word_ids.truncate(length_now);
            text.offsets.truncate(length_now);
            let rows = (self.settings.limits.max_batch_tokens / length_now).clamp(1, self.settings.limits.max_batch_requests);
            let batch: Vec<&TokenizedText> = std::iter::repeat_n(&text, rows).collect();
            if let Err(err) = self.encoder.forward(&batch).map(|states| self.head.pool_queries(&states)) {
                tracing::warn!(error = %err, length = length_now, "warm-up pass failed");
            }
            if length_now >= max_tokens || length_now >= full.len() {
                break;
            }
            length *= 2;
        }
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "encoder warmed up");
    }
}
