//! Multi-head self-attention inside the fused layer, one batch element per rayon task: for each head,
//! scores = Q·Kᵀ (cache-sized, `seq × seq`), then scale + key bias + softmax + dropout in place, then
//! the context P·V written straight into its head's columns. Q, K and V are strided views of the
//! `[tokens, 3h]` projection. Backward recomputes the probabilities from Q and K instead of keeping
//! them (as flash attention does); the dropout mask is kept as bits.

use rayon::prelude::*;

use super::super::{
    dropout::Dropout,
    gemm::{matmul, Mat, MatMut},
    math::{exp, vectorized},
};
use super::{
    mask::{apply_row, draw_row, Bits},
    rows::{dot, runs, sum},
    Dims,
};

/// Scale, key bias and softmax of one row of scores, in place.
#[inline(always)]
fn softmax_row(row: &mut [f32], bias: &[f32], scale: f32) {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut max = f32::NEG_INFINITY;
    let done = row.len() - row.len() % 8;
    for (c, bc) in row.chunks_exact_mut(8).zip(bias.chunks_exact(8)) {
        for k in 0..8 {
            c[k] = c[k] * scale + bc[k];
            lanes[k] = lanes[k].max(c[k]);
        }
    }
    for (v, &b) in row[done..].iter_mut().zip(&bias[done..]) {
        *v = *v * scale + b;
        max = max.max(*v);
    }
    let max = lanes.iter().copied().fold(max, f32::max);
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / sum(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Views of head `n` of batch element `bi`: Q, K, V as `[t, d]` with row stride 3h.
fn heads<'a>(qkv: &'a [f32], dims: Dims, bi: usize, n: usize) -> [Mat<'a>; 3] {
    let Dims { t, h, d, .. } = dims;
    let base = bi * t * 3 * h + n * d;
    [0, h, 2 * h].map(|off| Mat::strided(qkv, base + off, (t, d), (3 * h, 1)))
}

/// Probabilities of head `n` of batch element `bi` before dropout into `p` (`[t, t]`).
fn probabilities(
    qkv: &[f32],
    key_bias: &[f32],
    dims: Dims,
    scale: f32,
    bi: usize,
    n: usize,
    p: &mut [f32],
) {
    let t = dims.t;
    let [q, k, _] = heads(qkv, dims, bi, n);
    matmul(MatMut::rows(p, t, t), q, k.t(), false, false);
    let bias = &key_bias[bi * t..(bi + 1) * t];
    vectorized(
        #[inline(always)]
        || {
            for row in p.chunks_exact_mut(t) {
                softmax_row(row, bias, scale);
            }
        },
    );
}

/// The context `[tokens, h]` and the attention dropout mask (rows of `t` keys, one per batch
/// element, head and query).
pub fn forward(
    qkv: &[f32],
    key_bias: &[f32],
    dims: Dims,
    scale: f32,
    dropout: Option<&Dropout>,
) -> (Vec<f32>, Bits) {
    let Dims {
        b,
        t,
        h,
        heads: nh,
        d,
    } = dims;
    let mut ctx = vec![0f32; b * t * h];
    let mut mask = match dropout {
        Some(_) => Bits::new(b * nh * t, t),
        None => Bits::none(),
    };
    let wpr = mask.words_per_row;
    let items: Vec<_> = runs(&mut ctx, t * h, b)
        .into_iter()
        .zip(runs(&mut mask.words, nh * t * wpr, b))
        .enumerate()
        .collect();
    items.into_par_iter().for_each(|(bi, (out, words))| {
        let mut p = vec![0f32; t * t];
        for n in 0..nh {
            probabilities(qkv, key_bias, dims, scale, bi, n, &mut p);
            if let Some(drop) = dropout {
                for (i, row) in p.chunks_exact_mut(t).enumerate() {
                    let start = (((bi * nh + n) * t + i) * t) as u64;
                    let w = &mut words[(n * t + i) * wpr..(n * t + i + 1) * wpr];
                    draw_row(drop, start, row, w);
                }
            }
            let [_, _, v] = heads(qkv, dims, bi, n);
            let dst = MatMut::strided(out, n * d, (t, d), (h, 1));
            matmul(dst, Mat::rows(&p, t, t), v, false, false);
        }
    });
    (ctx, mask)
}

/// ∂L/∂qkv `[tokens, 3h]` from ∂L/∂context `[tokens, h]`.
pub fn backward(
    qkv: &[f32],
    dctx: &[f32],
    key_bias: &[f32],
    dims: Dims,
    scale: f32,
    dropout: Option<&Dropout>,
    mask: &Bits,
) -> Vec<f32> {
    let Dims {
        b,
        t,
        h,
        heads: nh,
        d,
    } = dims;
    let mut dqkv = vec![0f32; b * t * 3 * h];
    let wpr = mask.words_per_row;
    dqkv.par_chunks_mut(t * 3 * h)
        .enumerate()
        .for_each(|(bi, out)| {
            let (mut p, mut dropped, mut ds) =
                (vec![0f32; t * t], vec![0f32; t * t], vec![0f32; t * t]);
            for n in 0..nh {
                probabilities(qkv, key_bias, dims, scale, bi, n, &mut p);
                dropped.copy_from_slice(&p);
                let rows_mask = |i: usize| {
                    let row = (bi * nh + n) * t + i;
                    &mask.words[row * wpr..(row + 1) * wpr]
                };
                if let Some(drop) = dropout {
                    for (i, row) in dropped.chunks_exact_mut(t).enumerate() {
                        apply_row(drop.scale, rows_mask(i), row);
                    }
                }
                let [q, k, v] = heads(qkv, dims, bi, n);
                let dc = Mat::strided(dctx, bi * t * h + n * d, (t, d), (h, 1));
                // dV = P'ᵀ·dC.
                let dv = MatMut::strided(out, 2 * h + n * d, (t, d), (3 * h, 1));
                matmul(dv, Mat::rows(&dropped, t, t).t(), dc, false, false);
                // dP' = dC·Vᵀ, through the mask, then dS = P ⊙ (dP − Σ dP⊙P)·scale.
                matmul(MatMut::rows(&mut ds, t, t), dc, v.t(), false, false);
                vectorized(
                    #[inline(always)]
                    || {
                        for (i, (row, pr)) in
                            ds.chunks_exact_mut(t).zip(p.chunks_exact(t)).enumerate()
                        {
                            if let Some(drop) = dropout {
                                apply_row(drop.scale, rows_mask(i), row);
                            }
                            let dotp = dot(row, pr);
                            for (g, &pv) in row.iter_mut().zip(pr) {
                                *g = pv * (*g - dotp) * scale;
                            }
                        }
                    },
                );
                // dQ = dS·K, dK = dSᵀ·Q.
                let dq = MatMut::strided(out, n * d, (t, d), (3 * h, 1));
                matmul(dq, Mat::rows(&ds, t, t), k, false, false);
                let dk = MatMut::strided(out, h + n * d, (t, d), (3 * h, 1));
                matmul(dk, Mat::rows(&ds, t, t).t(), q, false, false);
            }
        });
    dqkv
}
