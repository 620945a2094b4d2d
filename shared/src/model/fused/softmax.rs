//! Softmax over the last dimension: y = exp(x − max) / Σ exp(x − max); dx = y ⊙ (dy − Σ dy⊙y).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};

use super::{
    math::{exp, vectorized},
    rows::{f32_slice, for_row_chunks},
};

struct Softmax;

fn last_dim(layout: &Layout) -> usize {
    layout.shape().dims().last().copied().unwrap_or(1).max(1)
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "coldfuse-softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout)?;
        let n = last_dim(layout);
        let mut y = vec![0f32; x.len()];
        for_row_chunks(&mut y, n, |first, out| {
            let src = &x[first * n..first * n + out.len()];
            for (o, row) in out.chunks_exact_mut(n).zip(src.chunks_exact(n)) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                vectorized(
                    #[inline(always)]
                    || {
                        for (ov, &v) in o.iter_mut().zip(row) {
                            *ov = exp(v - max);
                        }
                    },
                );
                let inv = 1.0 / o.iter().sum::<f32>();
                o.iter_mut().for_each(|v| *v *= inv);
            }
        });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            res.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad)?,
        ))
    }
}

/// (y, dy) ↦ y ⊙ (dy − Σ dy⊙y), row by row.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "coldfuse-softmax-last-dim-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let n = last_dim(l1);
        let mut dx = vec![0f32; y.len()];
        for_row_chunks(&mut dx, n, |first, out| {
            let ys = &y[first * n..first * n + out.len()];
            let gs = &g[first * n..first * n + out.len()];
            for ((o, yr), gr) in out
                .chunks_exact_mut(n)
                .zip(ys.chunks_exact(n))
                .zip(gs.chunks_exact(n))
            {
                let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                for ((ov, &yv), &gv) in o.iter_mut().zip(yr).zip(gr) {
                    *ov = yv * (gv - dot);
                }
            }
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Softmax over the last dimension, fused on the CPU for f32; elsewhere from primitive ops with the
/// row max detached (softmax does not depend on it).
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if super::applies(xs) {
        return xs.contiguous()?.apply_op1(Softmax);
    }
    let max = xs.max_keepdim(D::Minus1)?.detach();
    let e = xs.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&sum)
}
