//! `dare`: DARE (Yu et al., 2023, "Language models are Super Mario"): drop each diff value with
//! probability p, rescale the survivors by 1/(1−p), then average; the result is scaled by λ.
//!
//! The drop mask comes from a counter-based hash of (seed, contribution, tensor, element), so it does
//! not depend on chunking, threads, or the order contributions arrived in.

use super::{Chunk, CombineScratch, Strategy};

/// Drop-and-rescale, then the mean, scaled by λ.
#[derive(Debug, Clone, Copy)]
pub struct Dare {
    /// Drop probability p, in [0, 1).
    pub drop: f32,
    /// Seed of the drop masks.
    pub seed: u64,
    /// Scaling of the merged update.
    pub lambda: f32,
}

/// SplitMix64 finaliser: a well-mixed 64-bit hash of `x`.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Strategy for Dare {
    fn name(&self) -> &'static str {
        "dare"
    }

    fn combine(&self, chunk: &Chunk<'_>, out: &mut [f32], scratch: &mut CombineScratch) {
        let keep_scale = 1.0 / (1.0 - self.drop as f64);
        let threshold = (self.drop as f64 * (1u64 << 53) as f64) as u64;
        let acc = &mut scratch.acc;
        acc.clear();
        acc.resize(chunk.len, 0.0);
        for i in 0..chunk.n() {
            let stream = mix64(self.seed ^ mix64(chunk.keys[i] ^ mix64(chunk.tensor_key)));
            let w = chunk.weights[i] * keep_scale;
            for (j, (a, &v)) in acc.iter_mut().zip(chunk.row(i)).enumerate() {
                let u = mix64(stream ^ (chunk.start + j) as u64) >> 11;
                if u >= threshold {
                    *a += w * v as f64;
                }
            }
        }
        for (o, &a) in out[..chunk.len].iter_mut().zip(acc.iter()) {
            *o = (a * self.lambda as f64) as f32;
        }
    }
}
