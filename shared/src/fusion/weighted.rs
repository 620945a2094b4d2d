//! `weighted`: the diffs' mean weighted by each contribution's number of training examples.

use super::{strategy::weighted_sum, Chunk, CombineScratch, Strategy};

/// Mean of the diffs weighted by example count (FedAvg's rule).
#[derive(Debug, Clone, Copy, Default)]
pub struct Weighted;

impl Strategy for Weighted {
    fn name(&self) -> &'static str {
        "weighted"
    }

    fn weighted_by_examples(&self) -> bool {
        true
    }

    fn combine(&self, chunk: &Chunk<'_>, out: &mut [f32], scratch: &mut CombineScratch) {
        weighted_sum(chunk, 1.0, &mut scratch.acc, out);
    }
}
