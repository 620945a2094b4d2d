//! Layer norm over the last dimension: y = (x − μ)·r·w + b with r = 1/√(σ² + ε). Backward, with
//! x̂ = (x − μ)·r and ĝ = dy⊙w: dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ⊙x̂)), dw = Σ dy⊙x̂, db = Σ dy.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};

use super::rows::{f32_slice, threads};

struct LayerNorm {
    eps: f32,
}

/// Mean and 1/√(var + ε) of a row (two passes, like PyTorch's reference).
#[inline]
fn stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "coldfuse-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let n = w.len();
        let mut y = vec![0f32; x.len()];
        super::rows::for_row_chunks(&mut y, n, |first, out| {
            let src = &x[first * n..first * n + out.len()];
            for (o, row) in out.chunks_exact_mut(n).zip(src.chunks_exact(n)) {
                let (mean, r) = stats(row, self.eps);
                for (((ov, &v), &wv), &bv) in o.iter_mut().zip(row).zip(w).zip(b) {
                    *ov = (v - mean) * r * wv + bv;
                }
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ws = w.to_vec1::<f32>()?;
        let gs = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let n = ws.len();
        let rows = xs.len() / n;
        let mut dx = vec![0f32; xs.len()];
        let t = threads().min(rows.max(1));
        let per = rows.div_ceil(t.max(1)).max(1);
        // Each thread takes a run of rows and keeps its own partial dw and db.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = std::thread::scope(|s| {
            let handles: Vec<_> = dx
                .chunks_mut(per * n)
                .enumerate()
                .map(|(i, out)| {
                    let (xs, gs, ws) = (&xs, &gs, &ws);
                    let eps = self.eps;
                    s.spawn(move || {
                        let mut dw = vec![0f32; n];
                        let mut db = vec![0f32; n];
                        let start = i * per * n;
                        let xr = &xs[start..start + out.len()];
                        let gr = &gs[start..start + out.len()];
                        let mut gh = vec![0f32; n];
                        for ((o, row), g) in out
                            .chunks_exact_mut(n)
                            .zip(xr.chunks_exact(n))
                            .zip(gr.chunks_exact(n))
                        {
                            let (mean, r) = stats(row, eps);
                            let (mut sum_g, mut sum_gx) = (0f32, 0f32);
                            for j in 0..n {
                                let xh = (row[j] - mean) * r;
                                gh[j] = g[j] * ws[j];
                                sum_g += gh[j];
                                sum_gx += gh[j] * xh;
                                dw[j] += g[j] * xh;
                                db[j] += g[j];
                            }
                            let (mg, mgx) = (sum_g / n as f32, sum_gx / n as f32);
                            for j in 0..n {
                                let xh = (row[j] - mean) * r;
                                o[j] = r * (gh[j] - mg - xh * mgx);
                            }
                        }
                        (dw, db)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("layer-norm worker"))
                .collect()
        });
        let mut dw = vec![0f32; n];
        let mut db = vec![0f32; n];
        for (pw, pb) in partials {
            dw.iter_mut().zip(&pw).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(&pb).for_each(|(a, b)| *a += b);
        }
        let device = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), device)?),
            Some(Tensor::from_vec(dw, w.shape(), device)?),
            Some(Tensor::from_vec(db, w.shape(), device)?),
        ))
    }
}

/// Layer norm of `xs` over its last dimension with `weight` and `bias`, fused on the CPU for f32.
pub fn layer_norm(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if super::applies(xs) && super::applies(weight) && super::applies(bias) {
        return xs.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LayerNorm { eps: eps as f32 },
        );
    }
    let mean = xs.mean_keepdim(D::Minus1)?;
    let centered = xs.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}
