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
        let c = &mut scratch.column;
        for (j, o) in out[..chunk.len].iter_mut().enumerate() {
            c.clear();
            c.extend((0..n).map(|i| chunk.rows[i][j]));
            // Selection, not a sort: the same elements of the same total order, in O(n).
            let (below, mid, _) = c.select_nth_unstable_by(n / 2, f32::total_cmp);
            *o = if n % 2 == 1 {
                *mid
            } else {
                let lower = below.iter().copied().max_by(f32::total_cmp).unwrap_or(*mid);
                ((lower as f64 + *mid as f64) / 2.0) as f32
            };
        }
    }
}
