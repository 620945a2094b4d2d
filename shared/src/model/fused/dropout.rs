//! Inverted dropout whose mask is a pure function of (seed, element index): y = x·m/(1−p) with
//! m = [hash(seed, i) < keep]. Backward applies the same mask to the gradient, so no mask is stored
//! and elements are drawn in parallel, reproducibly for a seed.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

use super::rows::{f32_slice, for_row_chunks};

/// SplitMix64 of the seed and the element index.
#[inline]
pub(super) fn hash(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A dropout mask: drop probability, seed and the kept values' scale.
#[derive(Clone, Copy)]
pub(super) struct Dropout {
    /// Seed of the mask.
    pub(super) seed: u64,
    /// Keep an element when the hash's top 32 bits are below this.
    pub(super) threshold: u64,
    /// 1 / (1 − p).
    pub(super) scale: f32,
}

impl Dropout {
    /// Drop probability `p` (in (0, 1)), masks from `seed`.
    pub(super) fn new(p: f64, seed: u64) -> Self {
        let keep = 1.0 - p;
        Self {
            seed,
            threshold: (keep * (1u64 << 32) as f64) as u64,
            scale: (1.0 / keep) as f32,
        }
    }

    /// The mask as values: `scale` where an element is kept, 0 where it is dropped.
    pub(super) fn mask(&self, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        self.apply(&vec![1f32; n], &mut out);
        out
    }

    fn apply(&self, x: &[f32], out: &mut [f32]) {
        for_row_chunks(out, 1, |start, chunk| {
            for (k, (o, &v)) in chunk.iter_mut().zip(&x[start..]).enumerate() {
                let keep = (hash(self.seed, (start + k) as u64) >> 32) < self.threshold;
                *o = if keep { v * self.scale } else { 0.0 };
            }
        });
    }
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "coldfuse-dropout"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout)?;
        let mut y = vec![0f32; x.len()];
        self.apply(x, &mut y);
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::model::cuda::dropout(storage, layout, self.seed, self.threshold, self.scale)
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

/// Inverted dropout of `xs` with drop probability `p` (in (0, 1)), masks from `seed`: one kernel for f32
/// on the CPU or a CUDA GPU, else the same mask built on the host and multiplied in.
pub fn dropout(xs: &Tensor, p: f64, seed: u64) -> Result<Tensor> {
    let op = Dropout::new(p, seed);
    if xs.dtype() == DType::F32 && (xs.device().is_cpu() || xs.device().is_cuda()) {
        return xs.contiguous()?.apply_op1(op);
    }
    let mask = Tensor::from_vec(op.mask(xs.elem_count()), xs.shape(), xs.device())?;
    xs.mul(&mask.to_dtype(xs.dtype())?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn drops_the_right_share_scales_the_rest_and_masks_the_gradient_alike() {
        let x = Var::from_tensor(
            &Tensor::ones((1000, 100), candle_core::DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let y = dropout(x.as_tensor(), 0.1, 7).unwrap();
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        let kept = v.iter().filter(|&&a| a != 0.0).count() as f64 / v.len() as f64;
        assert!((kept - 0.9).abs() < 0.005, "kept {kept}");
        assert!(v.iter().all(|&a| a == 0.0 || (a - 1.0 / 0.9).abs() < 1e-6));
        let again: Vec<f32> = dropout(x.as_tensor(), 0.1, 7)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(v, again, "same seed, same mask");
        let other: Vec<f32> = dropout(x.as_tensor(), 0.1, 8)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_ne!(v, other);
        // d(sum y)/dx is the mask itself.
        let g = y.sum_all().unwrap().backward().unwrap();
        let gv: Vec<f32> = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(gv, v);
    }

    /// Tensors the kernel does not take (here bf16) get the same mask, built on the host.
    #[test]
    fn other_dtypes_get_the_kernels_mask() {
        let ones = Tensor::ones((300, 70), DType::F32, &Device::Cpu).unwrap();
        let kept = |t: &Tensor| -> Vec<bool> {
            let v: Vec<f32> = t
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            v.iter().map(|&a| a != 0.0).collect()
        };
        let f32_mask = kept(&dropout(&ones, 0.3, 11).unwrap());
        let bf16 = dropout(&ones.to_dtype(DType::BF16).unwrap(), 0.3, 11).unwrap();
        assert_eq!(bf16.dtype(), DType::BF16);
        assert_eq!(kept(&bf16), f32_mask);
        assert!(f32_mask.iter().any(|&k| !k) && f32_mask.iter().any(|&k| k));
    }
}
