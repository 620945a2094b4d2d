//! `trimmed-mean`: per coordinate, drop the k largest and k smallest values, average the rest
//! (robust to up to k outlying contributions).

use super::{Chunk, CombineScratch, Strategy};

/// Coordinate-wise trimmed mean; `trim` is the fraction dropped at each end (k = ⌊trim·N⌋).
#[derive(Debug, Clone, Copy)]
pub struct TrimmedMean {
    /// Fraction of contributions trimmed at each end, in [0, 0.5).
    pub trim: f32,
}

impl TrimmedMean {
    /// Values dropped at each end for `n` contributions.
    pub fn k(&self, n: usize) -> usize {
        (self.trim as f64 * n as f64).floor() as usize
    }
}

impl Strategy for TrimmedMean {
    fn name(&self) -> &'static str {
        "trimmed-mean"
    }

    fn min_contributions(&self) -> usize {
        // Enough that at least one value is trimmed at each end (otherwise this silently becomes the
        // plain mean) and at least one survives.
        let mut n = 1;
        while (self.trim > 0.0 && self.k(n) == 0) || self.k(n) * 2 >= n {
            n += 1;
        }
        n
    }

    fn combine(&self, chunk: &Chunk<'_>, out: &mut [f32], scratch: &mut CombineScratch) {
        let n = chunk.n();
        let kept: Vec<usize> = (self.k(n)..n - self.k(n)).collect();
        scratch.ranks.for_each(chunk, &kept, |j, column| {
            let sum: f64 = kept.iter().map(|&r| column.get(r) as f64).sum();
            out[j] = (sum / kept.len() as f64) as f32;
        });
    }
}
