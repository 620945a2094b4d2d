//! `ties`: TIES-merging (Yadav et al., 2023): trim each diff to its largest-magnitude values per
//! tensor, elect a sign per coordinate by total mass, average only the values that agree with it.

use super::{Chunk, CombineScratch, Strategy};

/// Trim, elect sign, disjoint mean; the result is scaled by λ.
#[derive(Debug, Clone, Copy)]
pub struct Ties {
    /// Fraction of each diff's values kept per tensor (by magnitude), in (0, 1].
    pub density: f32,
    /// Scaling of the merged update.
    pub lambda: f32,
}

impl Strategy for Ties {
    fn name(&self) -> &'static str {
        "ties"
    }

    fn magnitude_density(&self) -> Option<f32> {
        Some(self.density)
    }

    fn combine(&self, chunk: &Chunk<'_>, out: &mut [f32], _scratch: &mut CombineScratch) {
        let n = chunk.n();
        for (j, o) in out[..chunk.len].iter_mut().enumerate() {
            let trimmed = |i: usize| {
                let v = chunk.rows[i][j];
                if v.abs() >= chunk.thresholds[i] {
                    v
                } else {
                    0.0
                }
            };
            let mass: f64 = (0..n).map(|i| trimmed(i) as f64).sum();
            let (mut sum, mut count) = (0f64, 0u32);
            for i in 0..n {
                let v = trimmed(i);
                if v != 0.0 && (v > 0.0) == (mass > 0.0) {
                    sum += v as f64;
                    count += 1;
                }
            }
            *o = if mass == 0.0 || count == 0 {
                0.0
            } else {
                (sum / count as f64 * self.lambda as f64) as f32
            };
        }
    }
}
