//! `task-arithmetic`: base + λ × the sum of the diffs (Ilharco et al., "Editing models with task
//! arithmetic"). λ = 1/N is the mean.

use super::{strategy::weighted_sum, Chunk, CombineScratch, Strategy};

/// λ × the sum of the task vectors.
#[derive(Debug, Clone, Copy)]
pub struct TaskArithmetic {
    /// Scaling coefficient λ.
    pub lambda: f32,
}

impl Strategy for TaskArithmetic {
    fn name(&self) -> &'static str {
        "task-arithmetic"
    }

    fn linear_scale(&self, n: usize) -> Option<f64> {
        // Weights are equal (1/N); scale by N·λ to get λ·Σ.
        Some(self.lambda as f64 * n as f64)
    }

    fn combine(&self, chunk: &Chunk<'_>, out: &mut [f32], scratch: &mut CombineScratch) {
        let scale = self.linear_scale(chunk.n()).expect("linear");
        weighted_sum(chunk, scale, &mut scratch.acc, out);
    }
}
