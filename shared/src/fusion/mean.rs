//! `mean`: the paper's ColD Fusion rule, base + the unweighted mean of the diffs.

use super::{strategy::weighted_sum, Chunk, CombineScratch, Strategy};

/// Unweighted mean of the diffs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mean;

impl Strategy for Mean {
    fn name(&self) -> &'static str {
        "mean"
    }

    fn linear_scale(&self, _n: usize) -> Option<f64> {
        Some(1.0)
    }

    fn combine(&self, chunk: &Chunk<'_>, out: &mut [f32], scratch: &mut CombineScratch) {
        weighted_sum(chunk, 1.0, &mut scratch.acc, out);
    }
}
