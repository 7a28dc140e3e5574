//! Model load time: the 4-bit multilingual-e5-small (`e5-small-q4.bin` read, validated and
//! dequantized to f32) against all-MiniLM-L6-v2 (`model.safetensors`, memory-mapped f32), each
//! loaded several times onto the CPU. Parsing e5's 17 MB `tokenizer.json` is part of its load,
//! so it is also timed alone. Prints the minimum, median and maximum of each, and the ratio of
//! the two models' median load times.
//!
//! Run: `cargo bench --bench load` after `scripts/fetch-models.sh all`.
//! `ATTNREC_BENCH_LOADS` sets the number of repetitions (default 5).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use attnrec::encoder::{Encoder, ModelSource, TextTokenizer};
use candle_core::Device;

fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(name)
}

/// Runs `task` `repetitions` times, prints the minimum, median and maximum duration under
/// `label` and returns the median.
fn time(label: &str, repetitions: usize, mut task: impl FnMut()) -> Duration {
    let mut durations: Vec<Duration> = (0..repetitions)
        .map(|_| {
            let started = Instant::now();
            task();
            started.elapsed()
        })
        .collect();
    durations.sort();
    let median = durations[durations.len() / 2];
    println!(
        "{label}: {repetitions} runs, min {:.3} s, median {:.3} s, max {:.3} s",
        durations[0].as_secs_f64(),
        median.as_secs_f64(),
        durations[durations.len() - 1].as_secs_f64()
    );
    median
}

fn load(dir: &Path) {
    let files = ModelSource::Directory(dir.to_path_buf()).resolve().expect("run scripts/fetch-models.sh all first");
    drop(Encoder::load(&files, 128, Device::Cpu).expect("model loads"));
}

fn main() {
    let repetitions: usize =
        std::env::var("ATTNREC_BENCH_LOADS").map(|value| value.parse().expect("ATTNREC_BENCH_LOADS is a whole number")).unwrap_or(5);
    let e5_dir = model_dir("multilingual-e5-small");
    let minilm_dir = model_dir("all-MiniLM-L6-v2");

    time("multilingual-e5-small tokenizer.json parse alone", repetitions, || {
        drop(TextTokenizer::from_file(&e5_dir.join("tokenizer.json"), 128).expect("tokenizer loads"));
    });
    let e5 = time("multilingual-e5-small, 4-bit: full load", repetitions, || load(&e5_dir));
    let minilm = time("all-MiniLM-L6-v2, safetensors: full load", repetitions, || load(&minilm_dir));
    println!("median load time ratio, e5 / MiniLM: {:.1}", e5.as_secs_f64() / minilm.as_secs_f64());
}
