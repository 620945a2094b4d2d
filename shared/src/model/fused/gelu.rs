//! GELU with erf (`gelu` in HF configs): y = x·Φ(x), dy/dx = Φ(x) + x·φ(x).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::rows::{f32_slice, for_row_chunks};

/// erf(x) after Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), branch-free.
#[inline]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_7) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    (1.0 - poly * (-a * a).exp()).copysign(x)
}

/// Φ(x), the standard normal CDF.
#[inline]
fn cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// φ(x), the standard normal density.
#[inline]
fn pdf(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    INV_SQRT_2PI * (-0.5 * x * x).exp()
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "coldfuse-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout)?;
        let mut y = vec![0f32; x.len()];
        for_row_chunks(&mut y, 1, |start, out| {
            for (o, &v) in out.iter_mut().zip(&x[start..]) {
                *o = v * cdf(v);
            }
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
            for ((o, &v), &gv) in out.iter_mut().zip(&x[start..]).zip(&g[start..]) {
                *o = gv * (cdf(v) + v * pdf(v));
            }
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
