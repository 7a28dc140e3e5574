//! Batch formation by token budget, kept free of threads and models so it can be tested alone.

use std::collections::VecDeque;

/// Properties of a waiting text that the scheduler reads.
pub trait PendingText {
    /// Tokens of the text, special tokens included.
    fn tokens(&self) -> usize;
    /// True when the client disconnected and the result is no longer awaited.
    fn is_cancelled(&self) -> bool;
}

#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Padded tokens per forward pass: texts in the batch times the longest one.
    pub max_batch_tokens: usize,
    pub max_batch_requests: usize,
}

impl BatchLimits {
    fn fits(&self, count: usize, longest: usize) -> bool {
        count <= self.max_batch_requests && count * longest <= self.max_batch_tokens
    }
}

/// Texts waiting for a forward pass, oldest first.
pub struct BatchQueue<T> {
    pending: VecDeque<T>,
}

impl<T: PendingText> Default for BatchQueue<T> {
    fn default() -> Self {
        Self { pending: VecDeque::new() }
    }
}

impl<T: PendingText> BatchQueue<T> {
    pub fn push(&mut self, text: T) {
        self.pending.push_back(text);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn oldest(&self) -> Option<&T> {
        self.pending.front()
    }

    /// True when waiting longer cannot make the next batch larger.
    pub fn is_full(&self, limits: &BatchLimits) -> bool {
        let tokens: usize = self.pending.iter().map(PendingText::tokens).sum();
        self.pending.len() >= limits.max_batch_requests || tokens >= limits.max_batch_tokens
    }

    /// Removes texts whose client went away and returns them, so they cost no forward pass.
    pub fn remove_cancelled(&mut self) -> Vec<T> {
        let (cancelled, kept): (Vec<T>, Vec<T>) = self.pending.drain(..).partition(PendingText::is_cancelled);
        self.pending = kept.into();
        cancelled
    }

    /// Takes the next batch. The oldest text is always in it, even when it alone exceeds the
    /// token budget, so the queue always makes progress and no text waits forever. The rest
    /// of the batch is filled with the texts closest in length to it, which keeps padding low,
    /// as long as the padded size stays within the limits.
    pub fn next_batch(&mut self, limits: &BatchLimits) -> Vec<T> {
        let Some(oldest) = self.pending.front() else { return Vec::new() };
        let anchor = oldest.tokens();

        let mut candidates: Vec<usize> = (1..self.pending.len()).collect();
        candidates.sort_by_key(|&index| (self.pending[index].tokens().abs_diff(anchor), index));

        let mut chosen = vec![0];
        let mut longest = anchor;
        for index in candidates {
            let widened = longest.max(self.pending[index].tokens());
            if limits.fits(chosen.len() + 1, widened) {
                chosen.push(index);
                longest = widened;
            }
            if chosen.len() == limits.max_batch_requests {
                break;
            }
        }

        // Take the chosen texts out in arrival order and leave the others in theirs.
        chosen.sort_unstable();
        let mut batch = Vec::with_capacity(chosen.len());
        let mut remaining = VecDeque::with_capacity(self.pending.len() - chosen.len());
        let mut next_chosen = chosen.iter().peekable();
        for (index, text) in self.pending.drain(..).enumerate() {
            if next_chosen.peek() == Some(&&index) {
                next_chosen.next();
                batch.push(text);
            } else {
                remaining.push_back(text);
            }
        }
        self.pending = remaining;
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Text {
        id: usize,
        tokens: usize,
        cancelled: bool,
    }

    impl PendingText for Text {
        fn tokens(&self) -> usize {
            self.tokens
        }
        fn is_cancelled(&self) -> bool {
            self.cancelled
        }
    }

    fn queue(lengths: &[usize]) -> BatchQueue<Text> {
        let mut queue = BatchQueue::default();
        for (id, &tokens) in lengths.iter().enumerate() {
            queue.push(Text { id, tokens, cancelled: false });
        }
        queue
    }

    fn ids(batch: &[Text]) -> Vec<usize> {
        batch.iter().map(|text| text.id).collect()
    }

    const LIMITS: BatchLimits = BatchLimits { max_batch_tokens: 64, max_batch_requests: 8 };

    #[test]
    fn batch_respects_token_budget() {
        let mut queue = queue(&[16, 16, 16, 16, 16, 16]);
        let batch = queue.next_batch(&LIMITS);
        assert_eq!(batch.len(), 4);
        let longest = batch.iter().map(|text| text.tokens).max().unwrap();
        assert!(batch.len() * longest <= LIMITS.max_batch_tokens);
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn batch_respects_request_limit() {
        let mut queue = queue(&[2; 20]);
        assert_eq!(queue.next_batch(&LIMITS).len(), 8);
    }

    #[test]
    fn over_budget_text_runs_alone() {
        let mut queue = queue(&[200, 4, 4]);
        assert_eq!(ids(&queue.next_batch(&LIMITS)), vec![0]);
        assert_eq!(ids(&queue.next_batch(&LIMITS)), vec![1, 2]);
        assert!(queue.is_empty());
    }

    #[test]
    fn oldest_text_is_always_served_first() {
        // The long oldest text must not be passed over by the many short ones.
        let mut queue = queue(&[40, 4, 4, 4, 4, 4, 4]);
        assert_eq!(ids(&queue.next_batch(&LIMITS)), vec![0]);
        assert_eq!(ids(&queue.next_batch(&LIMITS)), vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn similar_lengths_are_grouped() {
        let mut queue = queue(&[8, 30, 8, 30, 8]);
        assert_eq!(ids(&queue.next_batch(&LIMITS)), vec![0, 2, 4]);
        assert_eq!(ids(&queue.next_batch(&LIMITS)), vec![1, 3]);
    }

    #[test]
    fn remaining_texts_keep_arrival_order() {
        let mut queue = queue(&[16, 16, 16, 16, 16, 16, 16]);
        queue.next_batch(&LIMITS);
        assert_eq!(ids(&queue.next_batch(&LIMITS)), vec![4, 5, 6]);
    }

    #[test]
    fn cancelled_texts_are_removed() {
        let mut queue = queue(&[4, 4, 4]);
        queue.pending[1].cancelled = true;
        let cancelled = queue.remove_cancelled();
        assert_eq!(ids(&cancelled), vec![1]);
        assert_eq!(ids(&queue.next_batch(&LIMITS)), vec![0, 2]);
    }

    #[test]
    fn fullness_follows_limits() {
        assert!(!queue(&[4, 4]).is_full(&LIMITS));
        assert!(queue(&[32, 32]).is_full(&LIMITS));
        assert!(queue(&[1; 8]).is_full(&LIMITS));
    }

    #[test]
    fn empty_queue_gives_empty_batch() {
        assert!(queue(&[]).next_batch(&LIMITS).is_empty());
    }
}
