//! Row-wise kernels of the fused layer (bias rows, dropout + residual + layer norm and its backward,
//! activations, column sums), run over runs of rows on rayon's pool and compiled for SIMD
//! ([`vectorized`]).

use rayon::prelude::*;

use super::super::{
    dropout::Dropout,
    math::{self, vectorized},
};
use super::mask::{apply_row, draw_row, Bits};
use crate::model::layers::Activation;

/// Rows per task: about four tasks per thread, each of at least 16 K values.
pub fn rows_per_task(rows: usize, row_len: usize) -> usize {
    const MIN_VALUES: usize = 1 << 14;
    let threads = rayon::current_num_threads().max(1);
    rows.div_ceil(threads * 4)
        .max(MIN_VALUES.div_ceil(row_len.max(1)))
        .max(1)
}

/// `v` cut into `tasks` runs of `per` items (the last one shorter; missing ones empty), so that
/// buffers of different widths zip task by task even when one of them is empty.
pub fn runs<T>(v: &mut [T], per: usize, tasks: usize) -> Vec<&mut [T]> {
    let mut out: Vec<&mut [T]> = if per == 0 {
        Vec::new()
    } else {
        v.chunks_mut(per).collect()
    };
    out.resize_with(tasks, || &mut []);
    out
}

/// Σ v with eight partial sums (so that the loop vectorises).
#[inline(always)]
pub fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ a⊙b with eight partial sums.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ a⊙b⊙c with eight partial sums.
#[inline(always)]
fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb, cc) = (a.chunks_exact(8), b.chunks_exact(8), c.chunks_exact(8));
    let tail: f32 = (ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder()))
    .map(|((x, y), z)| x * y * z)
    .sum();
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k] * z[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ (v − mean)² with eight partial sums.
#[inline(always)]
fn centered_squares(v: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum();
    for c in chunks {
        for k in 0..8 {
            acc[k] += (c[k] - mean) * (c[k] - mean);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `out[i] = act(inp[i])`, a loop of its own per activation (so that it vectorises).
#[inline(always)]
fn map<const ACT: u8>(out: &mut [f32], inp: &[f32]) {
    for (o, &x) in out.iter_mut().zip(inp) {
        *o = value::<ACT>(x);
    }
}

/// `grad[i] *= act′(inp[i])`.
#[inline(always)]
fn scale_by<const ACT: u8>(grad: &mut [f32], inp: &[f32]) {
    for (g, &x) in grad.iter_mut().zip(inp) {
        *g *= derivative::<ACT>(x);
    }
}

/// What backward needs of a residual layer norm.
pub struct NormSaved {
    /// The normalised input (x − μ)·r, one row per token.
    pub xhat: Vec<f32>,
    /// r = 1/√(σ² + ε) per row.
    pub rstd: Vec<f32>,
    /// The dropout mask of the branch (empty without dropout).
    pub mask: Bits,
}

/// y = LayerNorm(dropout(branch) + residual) row by row; `branch` is overwritten with y.
pub fn residual_norm(
    branch: &mut [f32],
    residual: &[f32],
    (w, b, eps): (&[f32], &[f32], f32),
    dropout: Option<&Dropout>,
) -> NormSaved {
    let n = w.len();
    let rows = branch.len() / n;
    let mut xhat = vec![0f32; branch.len()];
    let mut rstd = vec![0f32; rows];
    let mut mask = match dropout {
        Some(_) => Bits::new(rows, n),
        None => Bits::none(),
    };
    let wpr = mask.words_per_row;
    let per = rows_per_task(rows, n);
    let tasks = rows.div_ceil(per);
    let items: Vec<_> = runs(branch, per * n, tasks)
        .into_iter()
        .zip(runs(&mut xhat, per * n, tasks))
        .zip(runs(&mut rstd, per, tasks))
        .zip(runs(&mut mask.words, per * wpr, tasks))
        .enumerate()
        .collect();
    items
        .into_par_iter()
        .for_each(|(task, (((ys, xhs), rs), words))| {
            vectorized(
                #[inline(always)]
                || {
                    for (r, (y, xh)) in ys
                        .chunks_exact_mut(n)
                        .zip(xhs.chunks_exact_mut(n))
                        .enumerate()
                    {
                        let row = task * per + r;
                        if let Some(d) = dropout {
                            draw_row(d, (row * n) as u64, y, &mut words[r * wpr..(r + 1) * wpr]);
                        }
                        let res = &residual[row * n..(row + 1) * n];
                        for (v, &x) in y.iter_mut().zip(res) {
                            *v += x;
                        }
                        let mean = sum(y) / n as f32;
                        let var = centered_squares(y, mean) / n as f32;
                        let inv = 1.0 / (var + eps).sqrt();
                        rs[r] = inv;
                        for (((v, h), &wv), &bv) in y.iter_mut().zip(xh.iter_mut()).zip(w).zip(b) {
                            *h = (*v - mean) * inv;
                            *v = *h * wv + bv;
                        }
                    }
                },
            )
        });
    NormSaved { xhat, rstd, mask }
}

/// Backward of [`residual_norm`]: `grad` (∂L/∂y) is overwritten with ∂L/∂s, s = dropout(branch) +
/// residual (the residual's gradient); returns (∂L/∂w, ∂L/∂b).
pub fn residual_norm_backward(
    grad: &mut [f32],
    saved: &NormSaved,
    w: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let n = w.len();
    let rows = grad.len() / n;
    let per = rows_per_task(rows, n);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = grad
        .par_chunks_mut(per * n)
        .enumerate()
        .map(|(task, gs)| {
            vectorized(
                #[inline(always)]
                || {
                    let (mut dw, mut db) = (vec![0f32; n], vec![0f32; n]);
                    for (r, g) in gs.chunks_exact_mut(n).enumerate() {
                        let row = task * per + r;
                        let xh = &saved.xhat[row * n..(row + 1) * n];
                        let inv = saved.rstd[row];
                        for (((a, c), &gv), &x) in
                            dw.iter_mut().zip(db.iter_mut()).zip(g.iter()).zip(xh)
                        {
                            *a += gv * x;
                            *c += gv;
                        }
                        let mg = dot(g, w) / n as f32;
                        let mgx = dot3(g, w, xh) / n as f32;
                        for ((gv, &wv), &x) in g.iter_mut().zip(w).zip(xh) {
                            *gv = inv * (*gv * wv - mg - x * mgx);
                        }
                    }
                    (dw, db)
                },
            )
        })
        .collect();
    let (mut dw, mut db) = (vec![0f32; n], vec![0f32; n]);
    for (pw, pb) in partials {
        dw.iter_mut().zip(&pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(&pb).for_each(|(a, b)| *a += b);
    }
    (dw, db)
}

/// The gradient of a dropped-out branch: `grad` with the stored mask applied (a copy).
pub fn through_mask(grad: &[f32], mask: &Bits, dropout: Option<&Dropout>, n: usize) -> Vec<f32> {
    let mut out = grad.to_vec();
    let Some(d) = dropout else {
        return out;
    };
    let wpr = mask.words_per_row;
    let per = rows_per_task(grad.len() / n, n);
    out.par_chunks_mut(per * n)
        .zip(mask.words.par_chunks(per * wpr))
        .for_each(|(vs, words)| {
            for (row, w) in vs.chunks_exact_mut(n).zip(words.chunks_exact(wpr)) {
                apply_row(d.scale, w, row);
            }
        });
    out
}

/// The activation of `u`, element-wise.
pub fn activate(u: &[f32], act: Activation) -> Vec<f32> {
    let mut g = vec![0f32; u.len()];
    let per = rows_per_task(u.len(), 1);
    g.par_chunks_mut(per)
        .zip(u.par_chunks(per))
        .for_each(|(out, inp)| {
            // One loop per activation (a match inside the loop would keep it scalar).
            vectorized(
                #[inline(always)]
                || match act {
                    Activation::Gelu => map::<GELU>(out, inp),
                    Activation::GeluTanh => map::<GELU_TANH>(out, inp),
                    Activation::Relu => map::<RELU>(out, inp),
                    Activation::Tanh => map::<TANH>(out, inp),
                },
            )
        });
    g
}

/// √(2/π), the tanh-GELU's scale.
const GELU_C: f32 = 0.797_884_6;
/// The tanh-GELU's cubic coefficient.
const GELU_A: f32 = 0.044_715;

/// Activations as const parameters, so that each gets its own monomorphic loop.
const GELU: u8 = 0;
const GELU_TANH: u8 = 1;
const RELU: u8 = 2;
const TANH: u8 = 3;

/// act(x).
#[inline(always)]
fn value<const ACT: u8>(x: f32) -> f32 {
    match ACT {
        GELU => x * math::normal_cdf(x),
        GELU_TANH => 0.5 * x * (1.0 + math::tanh(GELU_C * (x + GELU_A * x * x * x))),
        RELU => x.max(0.0),
        _ => math::tanh(x),
    }
}

/// act′(x).
#[inline(always)]
fn derivative<const ACT: u8>(x: f32) -> f32 {
    match ACT {
        GELU => math::normal_cdf(x) + x * math::normal_pdf(x),
        GELU_TANH => {
            let th = math::tanh(GELU_C * (x + GELU_A * x * x * x));
            let inner = GELU_C * (1.0 + 3.0 * GELU_A * x * x);
            0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * inner
        }
        RELU => f32::from(x > 0.0),
        _ => {
            let th = math::tanh(x);
            1.0 - th * th
        }
    }
}

/// Backward of [`activate`]: `grad` ← `grad` ⊙ act′(u).
pub fn activate_backward(grad: &mut [f32], u: &[f32], act: Activation) {
    let per = rows_per_task(u.len(), 1);
    grad.par_chunks_mut(per)
        .zip(u.par_chunks(per))
        .for_each(|(gs, inp)| {
            vectorized(
                #[inline(always)]
                || match act {
                    Activation::Gelu => scale_by::<GELU>(gs, inp),
                    Activation::GeluTanh => scale_by::<GELU_TANH>(gs, inp),
                    Activation::Relu => scale_by::<RELU>(gs, inp),
                    Activation::Tanh => scale_by::<TANH>(gs, inp),
                },
            )
        });
}

/// Σ over rows of a row-major matrix with rows of `n` values: `[n]`.
pub fn col_sums(src: &[f32], n: usize) -> Vec<f32> {
    let per = rows_per_task(src.len() / n.max(1), n);
    let partials: Vec<Vec<f32>> = src
        .par_chunks(per * n)
        .map(|rows| {
            vectorized(
                #[inline(always)]
                || {
                    let mut acc = vec![0f32; n];
                    for row in rows.chunks_exact(n) {
                        for (a, v) in acc.iter_mut().zip(row) {
                            *a += v;
                        }
                    }
                    acc
                },
            )
        })
        .collect();
    let mut out = vec![0f32; n];
    for p in partials {
        out.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
    out
}
