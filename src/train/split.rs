//! Deterministic split of judged queries into train, validation and test sets, by query text.
//!
//! A query lands in the same set in every run with the same seed, so `attnrec train` and
//! `attnrec eval` agree on which queries are held out without sharing a file.

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
    /// Every query.
    All,
}

/// Shares of queries in the test and validation sets; the rest is for training.
#[derive(Debug, Clone, Copy)]
pub struct SplitFractions {
    pub test: f64,
    pub validation: f64,
}

impl Default for SplitFractions {
    fn default() -> Self {
        Self { test: 0.2, validation: 0.1 }
    }
}

/// Assigns a query to a set from a hash of the seed and the query text.
pub fn split_of(query: &str, seed: u64, fractions: SplitFractions) -> Split {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(query.as_bytes());
    let digest = hasher.finalize();
    let bucket = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) as f64 / u64::MAX as f64;
    if bucket < fractions.test {
        Split::Test
    } else if bucket < fractions.test + fractions.validation {
        Split::Validation
    } else {
        Split::Train
    }
}

/// True when `query` belongs to `split` (every query belongs to `All`).
pub fn in_split(query: &str, split: Split, seed: u64, fractions: SplitFractions) -> bool {
    split == Split::All || split_of(query, seed, fractions) == split
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stable_for_a_seed() {
        let fractions = SplitFractions::default();
        assert_eq!(split_of("red kettle", 1, fractions), split_of("red kettle", 1, fractions));
    }

    #[test]
    fn split_sizes_follow_fractions() {
        let fractions = SplitFractions::default();
        let queries: Vec<String> = (0..10_000).map(|i| format!("query {i}")).collect();
        let test = queries.iter().filter(|q| split_of(q, 7, fractions) == Split::Test).count();
        let validation = queries.iter().filter(|q| split_of(q, 7, fractions) == Split::Validation).count();
        assert!((1800..2200).contains(&test), "test set has {test} of 10000");
        assert!((800..1200).contains(&validation), "validation set has {validation} of 10000");
    }

    #[test]
    fn other_seed_moves_queries() {
        let fractions = SplitFractions::default();
        let moved = (0..1000).filter(|i| {
            let query = format!("query {i}");
            split_of(&query, 1, fractions) != split_of(&query, 2, fractions)
        });
        assert!(moved.count() > 200);
    }
}
