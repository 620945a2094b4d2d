//! `median`: the coordinate-wise median of the diffs (mean of the middle two for even N).

use super::{strategy::sorted_column, Chunk, CombineScratch, Strategy};

/// Coordinate-wise median.
#[derive(Debug, Clone, Copy, Default)]
pub struct Median;

impl Strategy for Median {
    fn name(&self) -> &'static str {
        "median"
    }

    fn combine(&self, chunk: &Chunk<'_>, out: &mut [f32], scratch: &mut CombineScratch) {
        let n = chunk.n();
        for (j, o) in out[..chunk.len].iter_mut().enumerate() {
            sorted_column(chunk, j, &mut scratch.column);
            let c = &scratch.column;
            *o = if n % 2 == 1 {
                c[n / 2]
            } else {
                ((c[n / 2 - 1] as f64 + c[n / 2] as f64) / 2.0) as f32
            };
        }
    }
}
