//! Each fused kernel against the same math from primitive candle ops: outputs and the gradients of a
//! random linear functional of them, on shapes that exercise the parallel row split.

use candle_core::{Device, Tensor, Var, D};

use super::*;

/// A tensor of uniform values in (−scale, scale) from `seed`.
pub(crate) fn randn(shape: &[usize], scale: f64, seed: u64) -> Tensor {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| (rng.random::<f64>() * 2.0 - 1.0) as f32 * scale as f32)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The largest |a − b|.
pub(crate) fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Output and input gradients of `f` under the functional Σ y⊙r.
fn run(f: impl Fn(&[Tensor]) -> Tensor, inputs: &[Tensor], r: &Tensor) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts);
    let grads = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
    let gs = ts.iter().map(|t| grads.get(t).unwrap().clone()).collect();
    (y, gs)
}

fn check(
    name: &str,
    fused: impl Fn(&[Tensor]) -> Tensor,
    reference: impl Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    tol: f32,
) {
    let r = randn(fused(inputs).dims(), 1.0, 99);
    let (y1, g1) = run(fused, inputs, &r);
    let (y2, g2) = run(reference, inputs, &r);
    let e = max_abs(&y1, &y2);
    assert!(e < tol, "{name} forward differs by {e}");
    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
        let e = max_abs(a, b);
        let scale = b
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            e <= tol * scale.max(1.0),
            "{name} gradient {i} differs by {e} (scale {scale})"
        );
    }
}

#[test]
fn fused_gelu_matches_candle_gelu_erf() {
    let x = randn(&[8, 64, 96], 6.0, 1);
    check(
        "gelu",
        |t| gelu_erf(&t[0]).unwrap(),
        |t| t[0].gelu_erf().unwrap(),
        &[x],
        2e-6,
    );
}

#[test]
fn fused_softmax_matches_primitive_ops() {
    let x = randn(&[4, 12, 33, 33], 8.0, 2);
    let reference = |t: &[Tensor]| {
        let max = t[0].max_keepdim(D::Minus1).unwrap().detach();
        let e = t[0].broadcast_sub(&max).unwrap().exp().unwrap();
        let s = e.sum_keepdim(D::Minus1).unwrap();
        e.broadcast_div(&s).unwrap()
    };
    check(
        "softmax",
        |t| softmax_last_dim(&t[0]).unwrap(),
        reference,
        &[x],
        1e-6,
    );
    // Masked positions (large negative scores) get probability 0 and gradient 0.
    let mut v = vec![0.5f32; 2 * 8];
    v[3] = -1e30;
    let x = Tensor::from_vec(v, (2, 8), &Device::Cpu).unwrap();
    let y = softmax_last_dim(&x).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(y[0][3], 0.0);
    assert!((y[0].iter().sum::<f32>() - 1.0).abs() < 1e-6);
}

#[test]
fn fused_layer_norm_matches_primitive_ops() {
    let x = randn(&[6, 50, 96], 3.0, 3);
    let w = (randn(&[96], 0.5, 4) + 1.0).unwrap();
    let b = randn(&[96], 0.5, 5);
    let eps = 1e-12;
    let reference = |t: &[Tensor]| {
        let mean = t[0].mean_keepdim(D::Minus1).unwrap();
        let c = t[0].broadcast_sub(&mean).unwrap();
        let var = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let n = c
            .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
            .unwrap();
        n.broadcast_mul(&t[1])
            .unwrap()
            .broadcast_add(&t[2])
            .unwrap()
    };
    check(
        "layer_norm",
        |t| layer_norm(&t[0], &t[1], &t[2], eps).unwrap(),
        reference,
        &[x, w, b],
        2e-5,
    );
}

#[test]
fn non_contiguous_inputs_are_handled() {
    let x = randn(&[5, 7], 2.0, 6).t().unwrap();
    assert!(!x.is_contiguous());
    let a = softmax_last_dim(&x).unwrap();
    let b = softmax_last_dim(&x.contiguous().unwrap()).unwrap();
    assert_eq!(max_abs(&a, &b), 0.0);
}

#[test]
fn fused_linear_matches_matmul_plus_bias() {
    let x = randn(&[3, 40, 24], 1.0, 7);
    let w = randn(&[56, 24], 0.3, 8);
    let b = randn(&[56], 0.3, 9);
    let reference = |t: &[Tensor]| {
        let x2 = t[0].reshape((120, 24)).unwrap();
        let y = x2
            .matmul(&t[1].t().unwrap())
            .unwrap()
            .broadcast_add(&t[2])
            .unwrap();
        y.reshape((3, 40, 56)).unwrap()
    };
    check(
        "linear",
        |t| linear(&t[0], &t[1], &t[2]).unwrap(),
        reference,
        &[x, w, b],
        1e-5,
    );
    // A view with an offset (a narrowed tensor) is read from the right place.
    let big = randn(&[2, 40, 24], 1.0, 10);
    let view = big.narrow(0, 1, 1).unwrap();
    let w = randn(&[8, 24], 0.3, 11);
    let b = randn(&[8], 0.3, 12);
    let a = linear(&view, &w, &b).unwrap();
    let e = reference_2d(&view.contiguous().unwrap(), &w, &b);
    assert!(max_abs(&a, &e) < 1e-5);
}

fn reference_2d(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    let (m, k) = (
        x.elem_count() / x.dims()[x.rank() - 1],
        x.dims()[x.rank() - 1],
    );
    let y = x
        .reshape((m, k))
        .unwrap()
        .matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(b)
        .unwrap();
    let mut dims = x.dims().to_vec();
    *dims.last_mut().unwrap() = w.dims()[0];
    y.reshape(dims).unwrap()
}
