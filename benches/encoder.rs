//! Encoder throughput (sentences per second) and single-query latency with the real
//! all-MiniLM-L6-v2, at batch 1, 8, 32 and 128 for 16- and 64-token texts.
//!
//! Run: `cargo bench --bench encoder` after `scripts/fetch-models.sh`.
//! `ATTNREC_BENCH_BATCHES` (for example `1,32`) limits the batch sizes.
//! `ATTNREC_BENCH_MODEL_DIR` points at another model directory; `ATTNREC_BENCH_DTYPE` (f32,
//! f16 or bf16) sets the precision of weights and activations.

use std::path::PathBuf;
use std::time::Duration;

use attnrec::encoder::{Encoder, ModelSource, TextKind, TokenizedText};
use attnrec::pooling::AttentionHead;
use candle_core::Device;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn model_dir() -> PathBuf {
    std::env::var("ATTNREC_BENCH_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2"))
}

/// Builds a text of exactly `tokens` tokens ([CLS] and [SEP] included) from catalogue-like words.
fn text_of_length(encoder: &Encoder, tokens: usize) -> TokenizedText {
    let words = "stainless steel cordless drill with two batteries and a carrying case for home repair ";
    let mut text = encoder.tokenizer().tokenize(&words.repeat(tokens), TextKind::Query).expect("tokenizes");
    let keep = tokens - 1;
    text.ids.truncate(keep);
    text.word_ids.truncate(keep);
    text.offsets.truncate(keep);
    text.ids.push(102);
    text.word_ids.push(None);
    text.offsets.push((0, 0));
    text
}

fn encoder_throughput(c: &mut Criterion) {
    let files = ModelSource::Directory(model_dir()).resolve().expect("run scripts/fetch-models.sh first");
    let dtype = match std::env::var("ATTNREC_BENCH_DTYPE").as_deref() {
        Ok("f16") => candle_core::DType::F16,
        Ok("bf16") => candle_core::DType::BF16,
        _ => candle_core::DType::F32,
    };
    let encoder = Encoder::load_with_dtype(&files, 128, Device::Cpu, dtype).expect("model loads");
    let head = AttentionHead::untrained(encoder.hidden_size(), &Device::Cpu).expect("head");

    let mut group = c.benchmark_group("encoder");
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));
    let batches: Vec<usize> = std::env::var("ATTNREC_BENCH_BATCHES")
        .map(|value| value.split(',').map(|size| size.trim().parse().expect("batch sizes are integers")).collect())
        .unwrap_or_else(|_| vec![1, 8, 32, 128]);
    for tokens in [16, 64] {
        let text = text_of_length(&encoder, tokens);
        assert_eq!(text.len(), tokens);
        for &batch in &batches {
            let texts: Vec<&TokenizedText> = std::iter::repeat_n(&text, batch).collect();
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new(format!("{tokens}_tokens"), batch), &texts, |b, texts| {
                b.iter(|| {
                    let states = encoder.forward(texts).expect("forward");
                    head.pool_queries(&states).expect("pooling")
                })
            });
        }
    }
    group.finish();

    let query = encoder.tokenizer().tokenize("i want a pair of nike running shoes", TextKind::Query).expect("tokenizes");
    c.bench_function("single_query_latency", |b| {
        b.iter(|| {
            let states = encoder.forward(&[&query]).expect("forward");
            head.pool_queries(&states).expect("pooling")
        })
    });
}

criterion_group!(benches, encoder_throughput);
criterion_main!(benches);
