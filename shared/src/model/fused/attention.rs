//! Multi-head scaled dot-product attention as one graph node: context = dropout(softmax(Q·Kᵀ·scale +
//! key bias))·V, read from and written to `[batch, seq, hidden]` (heads side by side in the hidden
//! dimension), so the split into heads, the transposes and their copies disappear. It works one batch
//! element at a time (scores of one element: `heads × seq × seq`, cache-sized), and backward recomputes
//! the probabilities from Q and K instead of keeping them, as flash attention does. The composition of
//! primitive ops it replaces makes about ten nodes per layer, several of `batch × heads × seq²` values,
//! each of which candle's backprop zero-fills and adds a gradient buffer for.

use candle_core::{
    backend::BackendStorage, CpuStorage, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor,
};

use super::{
    dropout::{hash, Dropout},
    rows::{f32_slice, for_row_chunks},
};

/// The attention node: head count, score scale, per-key additive bias and optional dropout.
struct Attention {
    heads: usize,
    scale: f32,
    /// Additive bias per key, `[batch · seq]` (0 or a large negative number for padding).
    key_bias: Vec<f32>,
    dropout: Option<Dropout>,
}

/// Batch, sequence, hidden and head widths of a `[batch, seq, hidden]` layout.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    h: usize,
    d: usize,
}

impl Attention {
    fn dims(&self, layout: &Layout) -> Result<Dims> {
        let (b, t, h) = layout.shape().dims3()?;
        if self.heads == 0 || !h.is_multiple_of(self.heads) {
            candle_core::bail!(
                "attention: hidden {h} is not a multiple of {} heads",
                self.heads
            );
        }
        if self.key_bias.len() != b * t {
            candle_core::bail!(
                "attention: key bias for {} keys, not {b}×{t}",
                self.key_bias.len()
            );
        }
        Ok(Dims {
            b,
            t,
            h,
            d: h / self.heads,
        })
    }

    /// The probabilities of batch element `bi` before dropout, `[heads, t, t]`.
    fn probs(&self, q: &CpuStorage, k: &CpuStorage, dims: Dims, bi: usize) -> Result<Vec<f32>> {
        let Dims { t, h, d, .. } = dims;
        let nh = self.heads;
        let offset = bi * t * h;
        // Head n of Q is rows of stride h starting at column n·d; Kᵀ is the same view transposed.
        let ql = Layout::new(Shape::from((nh, t, d)), vec![d, h, 1], offset);
        let kl = Layout::new(Shape::from((nh, d, t)), vec![d, 1, h], offset);
        let CpuStorage::F32(mut s) = q.matmul(k, (nh, t, t, d), &ql, &kl)? else {
            candle_core::bail!("attention: f32 expected");
        };
        let bias = &self.key_bias[bi * t..(bi + 1) * t];
        let scale = self.scale;
        for_row_chunks(&mut s, t, |_, rows| {
            for row in rows.chunks_exact_mut(t) {
                let mut max = f32::NEG_INFINITY;
                for (v, &bv) in row.iter_mut().zip(bias) {
                    *v = *v * scale + bv;
                    max = max.max(*v);
                }
                let mut sum = 0f32;
                for v in row.iter_mut() {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|v| *v *= inv);
            }
        });
        Ok(s)
    }

    /// Applies the dropout mask of batch element `bi` to `[heads, t, t]` values in place.
    fn drop(&self, values: &mut [f32], t: usize, bi: usize) {
        let Some(drop) = self.dropout else {
            return;
        };
        let base = (bi * self.heads * t * t) as u64;
        for_row_chunks(values, t, |first, rows| {
            let start = base + (first * t) as u64;
            for (i, v) in rows.iter_mut().enumerate() {
                let keep = (hash(drop.seed, start + i as u64) >> 32) < drop.threshold;
                *v = if keep { *v * drop.scale } else { 0.0 };
            }
        });
    }
}

/// Contiguous `[heads, t, d]` blocks of batch element `bi` scattered into `[batch, t, heads·d]`.
fn scatter_heads(src: &[f32], dst: &mut [f32], dims: Dims, heads: usize, bi: usize) {
    let Dims { t, h, d, .. } = dims;
    for n in 0..heads {
        for i in 0..t {
            let from = (n * t + i) * d;
            let to = (bi * t + i) * h + n * d;
            dst[to..to + d].copy_from_slice(&src[from..from + d]);
        }
    }
}

/// The strided head views assume q, k and v alike, contiguous from the start of their storage.
fn check_dense(layouts: [&Layout; 3]) -> Result<()> {
    for l in layouts {
        if l.shape() != layouts[0].shape() || !l.is_contiguous() || l.start_offset() != 0 {
            candle_core::bail!("attention: q, k, v must be dense and alike");
        }
    }
    Ok(())
}

fn f32_vec(s: CpuStorage) -> Result<Vec<f32>> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("attention: f32 expected"),
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "coldfuse-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        lq: &Layout,
        k: &CpuStorage,
        lk: &Layout,
        v: &CpuStorage,
        lv: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.dims(lq)?;
        check_dense([lq, lk, lv])?;
        let Dims { b, t, h, d } = dims;
        let nh = self.heads;
        let mut out = vec![0f32; b * t * h];
        for bi in 0..b {
            let mut p = self.probs(q, k, dims, bi)?;
            self.drop(&mut p, t, bi);
            let probs = CpuStorage::F32(p);
            let pl = Layout::contiguous((nh, t, t));
            let vl = Layout::new(Shape::from((nh, t, d)), vec![d, h, 1], bi * t * h);
            let ctx = f32_vec(probs.matmul(v, (nh, t, d, t), &pl, &vl)?)?;
            scatter_heads(&ctx, &mut out, dims, nh, bi);
        }
        Ok((CpuStorage::F32(out), lq.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = dense(grad)?;
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (Storage::Cpu(qc), Storage::Cpu(kc), Storage::Cpu(vc), Storage::Cpu(gc)) =
            (&*qs, &*ks, &*vs, &*gs)
        else {
            candle_core::bail!("attention: CPU tensors expected");
        };
        if f32_slice(gc, gl)?.len() != ql.shape().elem_count() {
            candle_core::bail!("attention: gradient of shape {:?}", gl.shape());
        }
        let dims = self.dims(ql)?;
        check_dense([ql, kl, vl])?;
        let Dims { b, t, h, d } = dims;
        let nh = self.heads;
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; b * t * h],
            vec![0f32; b * t * h],
            vec![0f32; b * t * h],
        );
        let heads = |bi: usize| Layout::new(Shape::from((nh, t, d)), vec![d, h, 1], bi * t * h);
        let heads_t = |bi: usize| Layout::new(Shape::from((nh, d, t)), vec![d, 1, h], bi * t * h);
        let square = Layout::contiguous((nh, t, t));
        let square_t = Layout::new(Shape::from((nh, t, t)), vec![t * t, 1, t], 0);
        for bi in 0..b {
            let p = self.probs(qc, kc, dims, bi)?;
            let mut dropped = p.clone();
            self.drop(&mut dropped, t, bi);
            // dV = P'ᵀ·dO.
            let dropped = CpuStorage::F32(dropped);
            let dv_b = f32_vec(dropped.matmul(gc, (nh, t, d, t), &square_t, &heads(bi))?)?;
            scatter_heads(&dv_b, &mut dv, dims, nh, bi);
            // dP' = dO·Vᵀ, then through dropout and softmax: dS = P ⊙ (dP − Σ dP⊙P) · scale.
            let mut ds = f32_vec(gc.matmul(vc, (nh, t, t, d), &heads(bi), &heads_t(bi))?)?;
            self.drop(&mut ds, t, bi);
            let scale = self.scale;
            for_row_chunks(&mut ds, t, |first, rows| {
                let ps = &p[first * t..first * t + rows.len()];
                for (row, pr) in rows.chunks_exact_mut(t).zip(ps.chunks_exact(t)) {
                    let dot: f32 = row.iter().zip(pr).map(|(a, b)| a * b).sum();
                    for (g, &pv) in row.iter_mut().zip(pr) {
                        *g = pv * (*g - dot) * scale;
                    }
                }
            });
            let ds = CpuStorage::F32(ds);
            // dQ = dS·K, dK = dSᵀ·Q.
            let dq_b = f32_vec(ds.matmul(kc, (nh, t, d, t), &square, &heads(bi))?)?;
            scatter_heads(&dq_b, &mut dq, dims, nh, bi);
            let dk_b = f32_vec(ds.matmul(qc, (nh, t, d, t), &square_t, &heads(bi))?)?;
            scatter_heads(&dk_b, &mut dk, dims, nh, bi);
        }
        let shape = ql.shape().clone();
        let tensor = |v: Vec<f32>| Tensor::from_vec(v, shape.clone(), &Device::Cpu);
        Ok((Some(tensor(dq)?), Some(tensor(dk)?), Some(tensor(dv)?)))
    }
}

/// Multi-head attention over `[batch, seq, hidden]` q, k, v with `heads` heads, scores scaled by
/// `scale`, `key_bias` (`[batch · seq]`) added per key, and dropout `(p, seed)` on the probabilities;
/// CPU f32 only (check [`super::applies`]). Returns the context, `[batch, seq, hidden]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f64,
    key_bias: Vec<f32>,
    dropout: Option<(f64, u64)>,
) -> Result<Tensor> {
    let op = Attention {
        heads,
        scale: scale as f32,
        key_bias,
        dropout: dropout.map(|(p, seed)| Dropout::new(p, seed)),
    };
    dense(q)?.apply_op3(&dense(k)?, &dense(v)?, op)
}

/// `x` contiguous from the start of its storage (what the strided head views assume).
fn dense(x: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    if x.layout().start_offset() == 0 {
        Ok(x)
    } else {
        x.copy()
    }
}
