//! Shoppers' event sequences and the leave-last-out split used to train and evaluate the
//! history attention.

use std::collections::HashMap;

/// One event of a sequence: the item's row in the catalogue and, when the event carried a
/// query, the query's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceStep {
    pub item: usize,
    pub query: Option<usize>,
}

/// One shopper's events, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sequence {
    pub steps: Vec<SequenceStep>,
}

impl Sequence {
    /// Returns the distinct items before `position`, most recent first, at most `limit` of them.
    pub fn history_before(&self, position: usize, limit: usize) -> Vec<usize> {
        let mut distinct = Vec::with_capacity(limit.min(position));
        let mut seen = std::collections::HashSet::with_capacity(limit.min(position));
        for step in self.steps[..position].iter().rev() {
            if distinct.len() == limit {
                break;
            }
            if seen.insert(step.item) {
                distinct.push(step.item);
            }
        }
        distinct
    }

    /// Returns every distinct item before `position`: those a ranking for that step leaves out.
    pub fn seen_before(&self, position: usize) -> Vec<usize> {
        self.history_before(position, usize::MAX)
    }
}

/// Part of the leave-last-out split that a predicted step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SequenceSplit {
    Train,
    Validation,
    Test,
}

/// A step to predict from the steps before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryTarget {
    pub sequence: usize,
    /// Index of the predicted step; the history is the steps before it.
    pub position: usize,
    pub split: SequenceSplit,
}

/// Leave-last-out: each sequence's last step is a test target, the one before it a
/// validation target, and every earlier step after the first a training target. Sequences
/// with fewer than three steps give training targets only, so that every test and validation
/// target has some history.
pub fn leave_last_out(sequences: &[Sequence]) -> Vec<HistoryTarget> {
    let mut targets = Vec::new();
    for (sequence, steps) in sequences.iter().map(|sequence| sequence.steps.len()).enumerate() {
        let held_out = if steps >= 3 { 2 } else { 0 };
        for position in 1..steps {
            let split = match steps - position {
                1 if held_out > 0 => SequenceSplit::Test,
                2 if held_out > 0 => SequenceSplit::Validation,
                _ => SequenceSplit::Train,
            };
            targets.push(HistoryTarget { sequence, position, split });
        }
    }
    targets
}

/// Groups `(user, item row, time, query row)` events into one sequence per user, ordered by
/// time and then by input order. Users come out in the order they first appear.
pub fn sequences_by_user<U: std::hash::Hash + Eq + Clone>(events: impl IntoIterator<Item = (U, usize, f64, Option<usize>)>) -> Vec<Sequence> {
    let mut order: HashMap<U, usize> = HashMap::new();
    let mut grouped: Vec<Vec<(f64, usize, SequenceStep)>> = Vec::new();
    for (arrival, (user, item, time, query)) in events.into_iter().enumerate() {
        let next = grouped.len();
        let slot = *order.entry(user).or_insert(next);
        if slot == next {
            grouped.push(Vec::new());
        }
        grouped[slot].push((time, arrival, SequenceStep { item, query }));
    }
    grouped
        .into_iter()
        .map(|mut events| {
            events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            Sequence { steps: events.into_iter().map(|(_, _, step)| step).collect() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(items: &[usize]) -> Sequence {
        Sequence { steps: items.iter().map(|&item| SequenceStep { item, query: None }).collect() }
    }

    #[test]
    fn last_steps_are_held_out() {
        let targets = leave_last_out(&[sequence(&[1, 2, 3, 4]), sequence(&[5, 6])]);
        let splits: Vec<(usize, usize, SequenceSplit)> = targets.iter().map(|target| (target.sequence, target.position, target.split)).collect();
        assert_eq!(
            splits,
            vec![
                (0, 1, SequenceSplit::Train),
                (0, 2, SequenceSplit::Validation),
                (0, 3, SequenceSplit::Test),
                (1, 1, SequenceSplit::Train),
            ]
        );
    }

    #[test]
    fn history_is_distinct_and_most_recent_first() {
        let shopper = sequence(&[7, 8, 7, 9, 10]);
        assert_eq!(shopper.history_before(4, 10), vec![9, 7, 8]);
        assert_eq!(shopper.history_before(4, 2), vec![9, 7]);
        assert!(shopper.history_before(0, 5).is_empty());
    }

    #[test]
    fn events_are_grouped_and_ordered_by_time() {
        let events = vec![("b", 1, 5.0, None), ("a", 2, 9.0, None), ("b", 3, 1.0, Some(0)), ("a", 4, 9.0, None)];
        let sequences = sequences_by_user(events);
        assert_eq!(sequences[0].steps, vec![SequenceStep { item: 3, query: Some(0) }, SequenceStep { item: 1, query: None }]);
        assert_eq!(sequences[1].steps.iter().map(|step| step.item).collect::<Vec<_>>(), vec![2, 4]);
    }
}
