//! A dense layer y = x·Wᵀ + b as one graph node: forward is one GEMM into a fresh buffer plus the bias
//! added in place; backward is dx = dy·W, dW = dyᵀ·x, db = Σ dy. The composition of primitive ops
//! (reshape, transpose, matmul, broadcast, add, reshape) makes six nodes, and candle's backprop
//! zero-fills and adds a gradient buffer for each of them.

use candle_core::{
    backend::BackendStorage, CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor,
};

struct Linear;

/// Rows (all leading dimensions) and the output shape of x·Wᵀ.
fn dims(x: &Layout, w: &Layout) -> Result<(usize, usize, usize, Shape)> {
    let (out, inp) = w.shape().dims2()?;
    let k = x.shape().dims().last().copied().unwrap_or(0);
    if k != inp {
        candle_core::bail!("linear: input width {k} but weight {:?}", w.shape());
    }
    let m = x.shape().elem_count() / k.max(1);
    let mut shape = x.shape().dims().to_vec();
    *shape.last_mut().expect("input has dimensions") = out;
    Ok((m, out, k, Shape::from(shape)))
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "coldfuse-linear"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, n, k, shape) = dims(lx, lw)?;
        let x2 = Layout::contiguous_with_offset((m, k), lx.start_offset());
        let wt = lw.transpose(0, 1)?;
        let y = sx.matmul(sw, (1, m, n, k), &x2, &wt)?;
        let CpuStorage::F32(mut y) = y else {
            candle_core::bail!("linear: f32 expected");
        };
        let b = super::rows::f32_slice(sb, lb)?;
        super::rows::for_row_chunks(&mut y, n, |_, rows| {
            for row in rows.chunks_exact_mut(n) {
                row.iter_mut().zip(b).for_each(|(v, bv)| *v += bv);
            }
        });
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, k) = w.dims2()?;
        let m = x.elem_count() / k;
        let g = grad.contiguous()?.reshape((m, n))?;
        let x2 = x.reshape((m, k))?;
        let dx = g.matmul(w)?.reshape(x.shape())?;
        let dw = g.t()?.matmul(&x2)?;
        let db = column_sums(&g)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Σ over rows of a contiguous `[m, n]` f32 CPU tensor, `[n]`: candle's `sum(0)` walks the rows with
/// a strided, scalar loop (≈5% of a training step in the dense layers' bias gradients).
fn column_sums(g: &Tensor) -> Result<Tensor> {
    let (m, n) = g.dims2()?;
    let (storage, layout) = g.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return g.sum(0);
    };
    let values = super::rows::f32_slice(cpu, layout)?;
    let mut sums = vec![0f32; n];
    for row in values.chunks_exact(n).take(m) {
        sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
    }
    Tensor::from_vec(sums, n, g.device())
}

/// x·Wᵀ + b over the last dimension of `x`, as one node on the CPU for f32 (check [`super::applies`]
/// for all three).
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, Linear)
}
