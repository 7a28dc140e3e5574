//! HNSW (usearch) against exact search: query time and recall@10 at 100k and 1M vectors.
//!
//! The vectors are real catalogue embeddings (read from a data directory built by
//! `attnrec index`), repeated with Gaussian noise up to the target size. They are therefore
//! clustered like real embeddings, unlike uniformly random vectors, which are the unrealistic
//! worst case for any HNSW. Queries are further noisy copies of random catalogue vectors.
//!
//! Run: `cargo bench --bench ann`, with
//! - `ATTNREC_ANN_DATA_DIR` (default `var/homedepot`): the data directory to read vectors from;
//! - `ATTNREC_ANN_SIZES` (default `100000,1000000`): index sizes;
//! - `ATTNREC_ANN_QUERIES` (default 200): queries per size;
//! - `ATTNREC_ANN_SCALARS` (default `f32,f16`): vector storage types to measure.

use std::time::Instant;

use attnrec::catalog::{ItemStore, DATABASE_FILE, INDEX_FILE};
use attnrec::config::{IndexSettings, ScalarChoice};
use attnrec::catalog::VectorIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ITEM_NOISE: f32 = 0.02;
const QUERY_NOISE: f32 = 0.03;

fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
    let u2: f32 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

fn noisy_unit(base: &[f32], sigma: f32, rng: &mut StdRng) -> Vec<f32> {
    let mut vector: Vec<f32> = base.iter().map(|value| value + sigma * gaussian(rng)).collect();
    let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
    vector.iter_mut().for_each(|value| *value /= norm);
    vector
}

fn read_base_vectors(data_dir: &std::path::Path) -> Vec<Vec<f32>> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let keys: Vec<u64> = runtime.block_on(async {
        let store = ItemStore::open(&data_dir.join(DATABASE_FILE)).await.expect("catalogue database opens");
        store.all_ids().await.expect("ids").into_iter().map(|(key, _)| key).collect()
    });
    let index = usearch::Index::restore(&data_dir.join(INDEX_FILE).to_string_lossy()).expect("index loads");
    let dimensions = index.dimensions();
    keys.iter()
        .map(|key| {
            let mut vector = vec![0f32; dimensions];
            index.get(*key, &mut vector).expect("vector present");
            vector
        })
        .collect()
}

fn recall_at_10(approximate: &[u64], exact: &[u64]) -> f64 {
    let found = approximate.iter().take(10).filter(|key| exact.iter().take(10).any(|other| other == *key)).count();
    found as f64 / exact.len().min(10).max(1) as f64
}

fn main() {
    let data_dir = std::path::PathBuf::from(std::env::var("ATTNREC_ANN_DATA_DIR").unwrap_or_else(|_| "var/homedepot".into()));
    let sizes: Vec<usize> = std::env::var("ATTNREC_ANN_SIZES")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|size| size.trim().parse().expect("sizes are integers"))
        .collect();
    let scalars: Vec<ScalarChoice> = std::env::var("ATTNREC_ANN_SCALARS")
        .unwrap_or_else(|_| "f32,f16".into())
        .split(',')
        .map(|name| match name.trim() {
            "f16" => ScalarChoice::F16,
            _ => ScalarChoice::F32,
        })
        .collect();
    let query_count: usize = std::env::var("ATTNREC_ANN_QUERIES").ok().and_then(|value| value.parse().ok()).unwrap_or(200);
    if !data_dir.join(INDEX_FILE).exists() {
        eprintln!("{} has no index; build one with `attnrec index` or set ATTNREC_ANN_DATA_DIR", data_dir.display());
        std::process::exit(2);
    }

    let base = read_base_vectors(&data_dir);
    let dimensions = base[0].len();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    println!("{} base vectors of {dimensions} dimensions from {}; {threads} threads for building", base.len(), data_dir.display());
    println!("| vectors | scalar | build s | HNSW ms/query | exact ms/query | speed-up | recall@10 |");
    println!("|---|---|---|---|---|---|---|");

    for &size in &sizes {
        for &scalar in &scalars {
            let mut rng = StdRng::seed_from_u64(size as u64);
            let vectors: Vec<Vec<f32>> = (0..size).map(|i| noisy_unit(&base[i % base.len()], ITEM_NOISE, &mut rng)).collect();
            let queries: Vec<Vec<f32>> =
                (0..query_count).map(|_| noisy_unit(&base[rng.random_range(0..base.len())], QUERY_NOISE, &mut rng)).collect();

            let settings = IndexSettings { scalar, ..IndexSettings::default() };
            let index = VectorIndex::create(dimensions, &settings, size, threads).expect("index created");
            let started = Instant::now();
            std::thread::scope(|scope| {
                for worker in 0..threads {
                    let (index, vectors) = (&index, &vectors);
                    scope.spawn(move || {
                        for key in (worker..vectors.len()).step_by(threads) {
                            index.add(key as u64, &vectors[key]).expect("vector added");
                        }
                    });
                }
            });
            let build_seconds = started.elapsed().as_secs_f64();

            let started = Instant::now();
            let approximate: Vec<Vec<u64>> =
                queries.iter().map(|query| index.search(query, 10).expect("search").iter().map(|hit| hit.key).collect()).collect();
            let hnsw_ms = started.elapsed().as_secs_f64() * 1000.0 / query_count as f64;

            let started = Instant::now();
            let exact: Vec<Vec<u64>> =
                queries.iter().map(|query| index.exact_search(query, 10).expect("search").iter().map(|hit| hit.key).collect()).collect();
            let exact_ms = started.elapsed().as_secs_f64() * 1000.0 / query_count as f64;

            let recall = approximate.iter().zip(&exact).map(|(a, e)| recall_at_10(a, e)).sum::<f64>() / query_count as f64;
            let scalar_name = if scalar == ScalarChoice::F32 { "f32" } else { "f16" };
            println!(
                "| {size} | {scalar_name} | {build_seconds:.1} | {hnsw_ms:.3} | {exact_ms:.2} | {:.0}x | {recall:.4} |",
                exact_ms / hnsw_ms
            );
        }
    }
}
