//! The one trait every fusion strategy implements, and the chunk of inputs it combines.

use std::fmt;

use super::columns::ColumnRanks;

/// Everything a strategy sees for one chunk of one tensor: each contribution's decoded diff values
/// (already scaled by its clip factor), in a canonical order (ascending diff SHA-256).
#[derive(Debug)]
pub struct Chunk<'a> {
    /// `rows[i][..len]`: contribution `i`'s diff values for elements `start..start + len`.
    pub rows: &'a [Vec<f32>],
    /// Number of elements in this chunk.
    pub len: usize,
    /// Contribution weights summing to 1 (equal, or by example count for `weighted`).
    pub weights: &'a [f64],
    /// Per-contribution magnitude thresholds for this tensor (only for strategies that ask for them).
    pub thresholds: &'a [f32],
    /// Per-contribution stable keys (from the diff hash), for reproducible randomness.
    pub keys: &'a [u64],
    /// Stable key of the tensor (from its name).
    pub tensor_key: u64,
    /// Index of the chunk's first element in the flattened tensor.
    pub start: usize,
}

impl Chunk<'_> {
    /// Contribution `i`'s values in this chunk.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.rows[i][..self.len]
    }

    /// Number of contributions.
    pub fn n(&self) -> usize {
        self.weights.len()
    }
}

/// A way to turn N diffs into one update (the fused base is base + update).
///
/// Implementations are element-wise given the chunk, so the engine may split tensors into chunks and
/// run them on any number of threads with bit-identical results.
pub trait Strategy: Send + Sync + fmt::Debug {
    /// Name recorded in lineage.
    fn name(&self) -> &'static str;

    /// Whether contributions are weighted by their example counts (otherwise equally).
    fn weighted_by_examples(&self) -> bool {
        false
    }

    /// For magnitude trimming (TIES): the fraction of each contribution's values kept per tensor.
    /// When set, the engine computes `Chunk::thresholds` first.
    fn magnitude_density(&self) -> Option<f32> {
        None
    }

    /// The fewest contributions the strategy can fuse.
    fn min_contributions(&self) -> usize {
        1
    }

    /// For the linear strategies, whose update is `scale / n × Σ rows` under equal weights: that
    /// `scale` for `n` contributions. They can be folded one diff at a time into a running sum
    /// (`RunningSum`); every other strategy answers None.
    fn linear_scale(&self, _n: usize) -> Option<f64> {
        None
    }

    /// Writes the update for the chunk into `out[..chunk.len]`.
    fn combine(&self, chunk: &Chunk<'_>, out: &mut [f32], scratch: &mut CombineScratch);
}

/// Reusable per-thread buffers for strategies.
#[derive(Debug, Default)]
pub struct CombineScratch {
    /// f64 accumulators.
    pub acc: Vec<f64>,
    /// Ranked columns (median, trimmed mean).
    pub ranks: ColumnRanks,
}

/// `scale` × the weighted sum of the rows (weights sum to 1), accumulated in f64 so that N identical
/// diffs average back exactly under equal weights.
pub(crate) fn weighted_sum(chunk: &Chunk<'_>, scale: f64, acc: &mut Vec<f64>, out: &mut [f32]) {
    let len = chunk.len;
    if chunk.n() == 0 {
        out[..len].fill(0.0);
        return;
    }
    // Blocks small enough that the f64 accumulators stay in L1 while the rows stream past.
    const BLOCK: usize = 2048;
    acc.resize(BLOCK, 0.0);
    let equal = chunk.weights.windows(2).all(|w| w[0] == w[1]);
    let inv_n = 1.0 / chunk.n() as f64;
    let mut start = 0;
    while start < len {
        let end = (start + BLOCK).min(len);
        let acc = &mut acc[..end - start];
        // Equal weights: Σv / n rather than Σ(v / n), exact when all rows are equal.
        let w = |i: usize| if equal { 1.0 } else { chunk.weights[i] };
        let w0 = w(0);
        acc.iter_mut()
            .zip(&chunk.rows[0][start..end])
            .for_each(|(a, &v)| *a = w0 * v as f64);
        for i in 1..chunk.n() {
            let row = &chunk.rows[i][start..end];
            let wi = w(i);
            if wi == 1.0 {
                acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
            } else {
                acc.iter_mut()
                    .zip(row)
                    .for_each(|(a, &v)| *a += wi * v as f64);
            }
        }
        let out = &mut out[start..end];
        match equal {
            true => scaled_mean(acc, inv_n, scale, out),
            false => out
                .iter_mut()
                .zip(acc.iter())
                .for_each(|(o, &a)| *o = (a * scale) as f32),
        }
        start = end;
    }
}

/// `out = scale × acc × inv_n` in f32, from an equal-weight sum `acc` of n rows (`inv_n` = 1/n): the
/// last step of [`weighted_sum`] and of a running sum's close, so both give the same bits.
pub(crate) fn scaled_mean(acc: &[f64], inv_n: f64, scale: f64, out: &mut [f32]) {
    if scale == 1.0 {
        // Σv · (1/n) is within an f64 ulp of Σv / n, far below f32 rounding: identical rows still
        // average back exactly, without a division per element.
        out.iter_mut()
            .zip(acc)
            .for_each(|(o, &a)| *o = (a * inv_n) as f32);
    } else {
        out.iter_mut()
            .zip(acc)
            .for_each(|(o, &a)| *o = (a * inv_n * scale) as f32);
    }
}
