//! Ranking metrics over one query's ranked ids and its relevance judgments.

use std::collections::HashMap;

/// nDCG@k with the judged grade as the gain (as trec_eval computes it). Unjudged items count
/// as non-relevant (gain 0). Returns `None` when the query has no positive judgment.
pub fn ndcg_at(ranked: &[String], judged: &HashMap<String, f64>, k: usize) -> Option<f64> {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(rank, id)| judged.get(id).copied().unwrap_or(0.0) / (rank as f64 + 2.0).log2())
        .sum();
    let mut ideal: Vec<f64> = judged.values().copied().filter(|gain| *gain > 0.0).collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal.iter().take(k).enumerate().map(|(rank, gain)| gain / (rank as f64 + 2.0).log2()).sum();
    (idcg > 0.0).then(|| dcg / idcg)
}

/// Share of the relevant items (grade >= threshold) found in the top k. `None` when the query
/// has no relevant item.
pub fn recall_at(ranked: &[String], judged: &HashMap<String, f64>, threshold: f64, k: usize) -> Option<f64> {
    let relevant = judged.values().filter(|grade| **grade >= threshold).count();
    if relevant == 0 {
        return None;
    }
    let found = ranked.iter().take(k).filter(|id| judged.get(*id).is_some_and(|grade| *grade >= threshold)).count();
    Some(found as f64 / relevant as f64)
}

/// Reciprocal rank of the first relevant item within the top k, 0 when there is none.
/// `None` when the query has no relevant item.
pub fn reciprocal_rank_at(ranked: &[String], judged: &HashMap<String, f64>, threshold: f64, k: usize) -> Option<f64> {
    if !judged.values().any(|grade| *grade >= threshold) {
        return None;
    }
    let first = ranked.iter().take(k).position(|id| judged.get(id).is_some_and(|grade| *grade >= threshold));
    Some(first.map(|rank| 1.0 / (rank as f64 + 1.0)).unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| value.to_string()).collect()
    }

    fn judged(pairs: &[(&str, f64)]) -> HashMap<String, f64> {
        pairs.iter().map(|(id, grade)| (id.to_string(), *grade)).collect()
    }

    #[test]
    fn perfect_ranking_has_ndcg_one() {
        let grades = judged(&[("a", 3.0), ("b", 2.0)]);
        assert!((ndcg_at(&ids(&["a", "b", "c"]), &grades, 10).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn swapped_ranking_lowers_ndcg() {
        let grades = judged(&[("a", 3.0), ("b", 1.0)]);
        let ndcg = ndcg_at(&ids(&["b", "a"]), &grades, 10).unwrap();
        let expected = (1.0 + 3.0 / 3f64.log2()) / (3.0 + 1.0 / 3f64.log2());
        assert!((ndcg - expected).abs() < 1e-12);
    }

    #[test]
    fn unjudged_items_count_as_non_relevant() {
        let grades = judged(&[("a", 3.0)]);
        let ndcg = ndcg_at(&ids(&["x", "a"]), &grades, 10).unwrap();
        assert!((ndcg - 1.0 / 3f64.log2()).abs() < 1e-12);
    }

    #[test]
    fn recall_uses_threshold() {
        let grades = judged(&[("a", 3.0), ("b", 2.0), ("c", 2.67)]);
        assert_eq!(recall_at(&ids(&["a", "b"]), &grades, 2.5, 10), Some(0.5));
        assert_eq!(recall_at(&ids(&["b"]), &judged(&[("b", 2.0)]), 2.5, 10), None);
    }

    #[test]
    fn reciprocal_rank_of_second_position() {
        let grades = judged(&[("a", 3.0)]);
        assert_eq!(reciprocal_rank_at(&ids(&["x", "a"]), &grades, 2.5, 10), Some(0.5));
        assert_eq!(reciprocal_rank_at(&ids(&["x", "y"]), &grades, 2.5, 10), Some(0.0));
    }
}
