//! Recall of the live index after deletes, on real catalogue embeddings. Recall@10 against
//! exact search is measured four times. The first is before any delete and the second after
//! removing 30 % of the items. The third follows the background rebuild that the service runs
//! at that point. The last follows a churn that deletes 30 % more and adds as many new vectors,
//! which reuse the removed slots.
//!
//! Run: `cargo bench --bench deletes`, with
//! - `ATTNREC_ANN_DATA_DIR` (default `var/homedepot`): the data directory to read vectors from;
//! - `ATTNREC_ANN_QUERIES` (default 500): queries, noisy copies of random catalogue vectors.

use std::time::Instant;

use attnrec::catalog::{ItemStore, LiveIndex, VectorIndex, DATABASE_FILE, INDEX_FILE};
use attnrec::config::IndexSettings;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Half-width of the uniform noise added to each coordinate of a query.
const QUERY_NOISE: f32 = 0.05;
const DELETED_SHARE: f64 = 0.3;

fn noisy_unit(base: &[f32], half_width: f32, rng: &mut StdRng) -> Vec<f32> {
    let mut vector: Vec<f32> = base.iter().map(|value| value + half_width * (rng.random::<f32>() * 2.0 - 1.0)).collect();
    let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
    vector.iter_mut().for_each(|value| *value /= norm);
    vector
}

fn read_vectors(data_dir: &std::path::Path) -> Vec<(u64, Vec<f32>)> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let keys: Vec<u64> = runtime.block_on(async {
        let store = ItemStore::open(&data_dir.join(DATABASE_FILE)).await.expect("catalogue database opens");
        store.all_keys().await.expect("keys")
    });
    let index = usearch::Index::restore(&data_dir.join(INDEX_FILE).to_string_lossy()).expect("index loads");
    let dimensions = index.dimensions();
    keys.into_iter()
        .map(|key| {
            let mut vector = vec![0f32; dimensions];
            index.get(key, &mut vector).expect("vector present");
            (key, vector)
        })
        .collect()
}

/// Mean recall@10 of the index against a scan of `live`.
fn recall(index: &LiveIndex, live: &[(u64, Vec<f32>)], queries: &[Vec<f32>]) -> f64 {
    let mut found = 0;
    for query in queries {
        let mut scored: Vec<(f32, u64)> = live.iter().map(|(key, vector)| (vector.iter().zip(query).map(|(a, b)| a * b).sum(), *key)).collect();
        scored.select_nth_unstable_by(9, |a, b| b.0.total_cmp(&a.0));
        let truth: Vec<u64> = scored[..10].iter().map(|(_, key)| *key).collect();
        let hits = index.search(query, 10).expect("search");
        found += hits.iter().filter(|hit| truth.contains(&hit.key)).count();
    }
    found as f64 / (10 * queries.len()) as f64
}

fn main() {
    let data_dir = std::env::var("ATTNREC_ANN_DATA_DIR").unwrap_or_else(|_| "var/homedepot".into());
    let query_count: usize = std::env::var("ATTNREC_ANN_QUERIES").ok().and_then(|value| value.parse().ok()).unwrap_or(500);
    let settings = IndexSettings::default();
    let mut rng = StdRng::seed_from_u64(11);

    let mut live = read_vectors(std::path::Path::new(&data_dir));
    let dimensions = live[0].1.len();
    let queries: Vec<Vec<f32>> = (0..query_count).map(|_| noisy_unit(&live[rng.random_range(0..live.len())].1, QUERY_NOISE, &mut rng)).collect();
    println!("{} vectors of {dimensions} dimensions from {data_dir}, {query_count} queries", live.len());

    let started = Instant::now();
    let index = LiveIndex::new(VectorIndex::create(dimensions, &settings, live.len(), 2).expect("index"), &settings, 2);
    for (key, vector) in &live {
        index.add(*key, vector).expect("add");
    }
    println!("built in {:.1} s; recall@10 {:.4}", started.elapsed().as_secs_f64(), recall(&index, &live, &queries));

    live.shuffle(&mut rng);
    let removed = (live.len() as f64 * DELETED_SHARE) as usize;
    let deleted: Vec<(u64, Vec<f32>)> = live.drain(..removed).collect();
    for (key, _) in &deleted {
        index.remove(*key).expect("remove");
    }
    println!("after deleting {removed} ({:.0} %): recall@10 {:.4}, removed ratio {:.3}", DELETED_SHARE * 100.0, recall(&index, &live, &queries), index.removed_ratio());

    let started = Instant::now();
    let keys: Vec<u64> = live.iter().map(|(key, _)| *key).collect();
    let copied = index.copy(&keys).expect("copy");
    index.replace(copied.index);
    println!("after the rebuild ({:.1} s): recall@10 {:.4}", started.elapsed().as_secs_f64(), recall(&index, &live, &queries));

    // Churn: delete another 30 % and add the earlier deleted vectors back under new keys.
    let next_key = live.iter().map(|(key, _)| *key).max().unwrap_or(0) + 1;
    let churned: Vec<(u64, Vec<f32>)> = live.drain(..removed.min(live.len())).collect();
    for (key, _) in &churned {
        index.remove(*key).expect("remove");
    }
    for (offset, (_, vector)) in deleted.into_iter().enumerate() {
        let key = next_key + offset as u64;
        index.add(key, &vector).expect("add");
        live.push((key, vector));
    }
    println!("after deleting {removed} more and adding {removed} new (no rebuild): recall@10 {:.4}, removed ratio {:.3}", recall(&index, &live, &queries), index.removed_ratio());
}
