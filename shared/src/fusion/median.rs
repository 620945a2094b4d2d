//! `median`: the coordinate-wise median of the diffs (mean of the middle two for even N).

use super::{Chunk, CombineScratch, Strategy};

/// Coordinate-wise median.
#[derive(Debug, Clone, Copy, Default)]
pub struct Median;

impl Strategy for Median {
    fn name(&self) -> &'static str {
        "median"
    }

    fn combine(&self, chunk: &Chunk<'_>, out: &mut [f32], scratch: &mut CombineScratch) {
        let n = chunk.n();
        // The middle value under `total_cmp`, or the mean of the middle two (in f64).
        let (lower, upper) = ((n - 1) / 2, n / 2);
        scratch.ranks.for_each(chunk, &[lower, upper], |j, column| {
            out[j] = if lower == upper {
                column.get(upper)
            } else {
                ((column.get(lower) as f64 + column.get(upper) as f64) / 2.0) as f32
            };
        });
    }
}
