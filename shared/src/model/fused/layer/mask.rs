//! Dropout masks of the fused layer as bits: drawn once in forward from the same per-element hash as
//! the stand-alone dropout kernel (so both give the same mask for a seed), kept at one bit per
//! element for backward.

use super::super::dropout::{hash, Dropout};

/// One bit per element of a `rows × row_len` tensor, each row starting on a fresh word.
pub struct Bits {
    /// Words per row.
    pub words_per_row: usize,
    /// The bits, row by row.
    pub words: Vec<u64>,
}

impl Bits {
    /// An all-zero mask for `rows` rows of `row_len` elements.
    pub fn new(rows: usize, row_len: usize) -> Self {
        let words_per_row = row_len.div_ceil(64);
        Self {
            words_per_row,
            words: vec![0; rows * words_per_row],
        }
    }

    /// An empty mask (no dropout).
    pub fn none() -> Self {
        Self {
            words_per_row: 0,
            words: Vec::new(),
        }
    }
}

/// Draws the mask of one row whose first element has index `start` in the whole tensor into
/// `words`, and applies it to `values` (dropped → 0, kept → ·1/(1−p)).
#[inline(always)]
pub fn draw_row(d: &Dropout, start: u64, values: &mut [f32], words: &mut [u64]) {
    for (c, (w, chunk)) in words.iter_mut().zip(values.chunks_mut(64)).enumerate() {
        let base = start + (c * 64) as u64;
        let mut bits = 0u64;
        for (k, v) in chunk.iter_mut().enumerate() {
            let keep = (hash(d.seed, base + k as u64) >> 32) < d.threshold;
            bits |= u64::from(keep) << k;
            *v = if keep { *v * d.scale } else { 0.0 };
        }
        *w = bits;
    }
}

/// Applies a row's stored mask to `values`: dropped → 0, kept → ·`scale`.
#[inline(always)]
pub fn apply_row(scale: f32, words: &[u64], values: &mut [f32]) {
    for (&w, chunk) in words.iter().zip(values.chunks_mut(64)) {
        for (k, v) in chunk.iter_mut().enumerate() {
            let keep = (w >> k) & 1 == 1;
            *v = if keep { *v * scale } else { 0.0 };
        }
    }
}
