//! GELU with erf (`gelu` in HF configs): y = x·Φ(x), dy/dx = Φ(x) + x·φ(x).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::{
    math::{normal_cdf as cdf, normal_pdf as pdf, vectorized},
    rows::{f32_slice, for_row_chunks},
};

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "coldfuse-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout)?;
        let mut y = vec![0f32; x.len()];
        for_row_chunks(&mut y, 1, |start, out| {
            vectorized(
                #[inline(always)]
                || {
                    for (o, &v) in out.iter_mut().zip(&x[start..]) {
                        *o = v * cdf(v);
                    }
                },
            )
        });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluGrad)?))
    }
}

/// (x, dy) ↦ dy · (Φ(x) + x·φ(x)).
struct GeluGrad;

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "coldfuse-gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let mut dx = vec![0f32; x.len()];
        for_row_chunks(&mut dx, 1, |start, out| {
            vectorized(
                #[inline(always)]
                || {
                    for ((o, &v), &gv) in out.iter_mut().zip(&x[start..]).zip(&g[start..]) {
                        *o = gv * (cdf(v) + v * pdf(v));
                    }
                },
            )
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// GELU (erf) of `xs`, fused on the CPU for f32.
pub fn gelu_erf(xs: &Tensor) -> Result<Tensor> {
    if super::applies(xs) {
        xs.contiguous()?.apply_op1(Gelu)
    } else {
        xs.gelu_erf()
    }
}
