//! Element-wise math that vectorises: [`vectorized`] runs a loop compiled for AVX2 + FMA when the
//! CPU has them (pulp's run-time dispatch; the crate itself is built for baseline x86-64), and the
//! functions here are branch-free so such loops become SIMD code. libm's `expf` is a scalar call
//! per element, the largest cost of softmax and GELU otherwise.

/// Runs `f` compiled for the best instruction set the CPU offers (AVX2 + FMA on x86-64), with every
/// `#[inline(always)]` function it calls.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two (Cody & Waite), so that x − n·ln 2 loses no bits for |n| ≤ 128.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this e^x is under f32's smallest normal number: the result is 0.
const EXP_MIN: f32 = -87.336_55;
/// Above this e^x overflows f32: the result is +∞.
const EXP_MAX: f32 = 88.722_83;
/// 1.5 · 2²³: adding and subtracting it rounds an f32 of magnitude < 2²² to the nearest integer.
const ROUNDER: f32 = 12_582_912.0;

/// e^x within 2 ulp (Cephes' `expf` polynomial), 0 below the normal range, +∞ above, NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let c = x.clamp(EXP_MIN, EXP_MAX);
    let shifted = c * LOG2E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = c - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n as two powers of two, each a normal f32 for n in [−126, 128]; n read from the rounding
    // sum's low mantissa bits (an integer op that vectorises, unlike a float → int cast).
    let n = shifted.to_bits() as i32 - ROUNDER.to_bits() as i32;
    let half = n >> 1;
    let s1 = f32::from_bits(((half + 127) << 23) as u32);
    let s2 = f32::from_bits(((n - half + 127) << 23) as u32);
    let y = e * s1 * s2;
    if x < EXP_MIN {
        0.0
    } else if x > EXP_MAX {
        f32::INFINITY
    } else {
        // NaN passes through the clamp and the polynomial.
        y
    }
}

/// erf(x) after Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), branch-free.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_7) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// Φ(x), the standard normal CDF.
#[inline(always)]
pub fn normal_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// φ(x), the standard normal density.
#[inline(always)]
pub fn normal_pdf(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    INV_SQRT_2PI * exp(-0.5 * x * x)
}

/// tanh(x) = sign(x)·(1 − 2/(e^{2|x|} + 1)).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let e = exp(2.0 * x.abs());
    (1.0 - 2.0 / (e + 1.0)).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_and_handles_the_edges() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.72 {
            worst = worst.max(ulps(exp(x), x.exp()));
            x += 0.001_37;
        }
        assert!(worst <= 2, "{worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-1e9), 0.0, "masked scores give exactly 0");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        let v: Vec<f32> = (0..1000).map(|i| i as f32 * -0.05).collect();
        let out = vectorized(
            #[inline(always)]
            || v.iter().map(|&x| exp(x)).collect::<Vec<_>>(),
        );
        for (&x, y) in v.iter().zip(out) {
            assert!(ulps(y, x.exp()) <= 2);
        }
    }

    #[test]
    fn erf_and_tanh_match_libm() {
        for i in -400..400 {
            let x = i as f32 / 50.0;
            let want_erf = libm_erf(f64::from(x));
            let e = (f64::from(erf(x)) - want_erf).abs();
            assert!(e < 5e-7, "erf({x}) off by {e}");
            assert!((tanh(x) - x.tanh()).abs() < 3e-7, "tanh({x})");
        }
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
    }

    /// erf by its Taylor series (|x| ≤ 3) or continued fraction, in f64: a reference, not fast.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 3.0 {
            // erfc(x) ≈ e^{-x²}/(x√π) · (1 − 1/(2x²) + 3/(4x⁴)); below 1e-4 here.
            let a = x.abs();
            let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt())
                * (1.0 - 1.0 / (2.0 * a * a) + 3.0 / (4.0 * a.powi(4)));
            return (1.0 - erfc).copysign(x);
        }
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}
