//! Backward pass of the fused layer: ∂L/∂x and ∂L/∂(packed parameters) from ∂L/∂y and the saved
//! activations, each dense layer's three products as strided GEMMs (dW = dYᵀ·X, dX = dY·W; the
//! residual gradients accumulate in place).

use super::super::gemm::{matmul, Mat, MatMut};
use super::{
    attention,
    forward::Saved,
    packed::Part,
    rows::{activate_backward, col_sums, residual_norm_backward, through_mask},
    Config,
};

/// Gradients of a dense layer y = x·Wᵀ + b given ∂L/∂y `dy` (`rows × out`): writes ∂L/∂W into
/// `dw` and ∂L/∂b into `db`, and returns ∂L/∂x, or adds it into `dx` when given.
struct DenseGrad<'a> {
    x: &'a [f32],
    w: &'a [f32],
    dy: &'a [f32],
    rows: usize,
}

impl DenseGrad<'_> {
    fn params(&self, dw: &mut [f32], db: &mut [f32]) {
        let out = db.len();
        let inp = self.x.len() / self.rows;
        matmul(
            MatMut::rows(dw, out, inp),
            Mat::rows(self.dy, self.rows, out).t(),
            Mat::rows(self.x, self.rows, inp),
            false,
            true,
        );
        db.copy_from_slice(&col_sums(self.dy, out));
    }

    /// ∂L/∂x added into `dx` (`accumulate`) or written over it.
    fn input(&self, dx: &mut [f32], accumulate: bool) {
        let out = self.dy.len() / self.rows;
        let inp = self.x.len() / self.rows;
        matmul(
            MatMut::rows(dx, self.rows, inp),
            Mat::rows(self.dy, self.rows, out),
            Mat::rows(self.w, out, inp),
            accumulate,
            true,
        );
    }
}

/// (∂L/∂x, ∂L/∂p) for the layer with input `x`, packed parameters `p` and output gradient `dy`.
pub fn backward(
    x: &[f32],
    p: &[f32],
    dy: &[f32],
    saved: &Saved,
    cfg: &Config,
) -> (Vec<f32>, Vec<f32>) {
    let (m, h) = (cfg.dims.b * cfg.dims.t, cfg.dims.h);
    let pk = cfg.packing;
    let w = |part: Part| &p[pk.range(part)];
    let mut dp = vec![0f32; pk.total()];
    let mut put = |part: Part, values: &[f32]| dp[pk.range(part)].copy_from_slice(values);

    // Feed-forward block: y = LN2(dropout(g·Woutᵀ + b) + x1), g = act(x1·Wiᵀ + b).
    let mut dx1 = dy.to_vec();
    let (dw, db) = residual_norm_backward(&mut dx1, &saved.norm2, w(Part::Norm2Weight));
    put(Part::Norm2Weight, &dw);
    put(Part::Norm2Bias, &db);
    let d_out = through_mask(&dx1, &saved.norm2.mask, cfg.hidden_dropout[1].as_ref(), h);
    let out = DenseGrad {
        x: &saved.g,
        w: w(Part::OutWeight),
        dy: &d_out,
        rows: m,
    };
    let mut du = vec![0f32; saved.u.len()];
    out.input(&mut du, false);
    activate_backward(&mut du, &saved.u, cfg.act);
    let inter = DenseGrad {
        x: &saved.x1,
        w: w(Part::InterWeight),
        dy: &du,
        rows: m,
    };
    inter.input(&mut dx1, true);

    // Attention block: x1 = LN1(dropout(ctx·Woᵀ + b) + x).
    let (dw, db) = residual_norm_backward(&mut dx1, &saved.norm1, w(Part::Norm1Weight));
    let d_attn = through_mask(&dx1, &saved.norm1.mask, cfg.hidden_dropout[0].as_ref(), h);
    let attn_out = DenseGrad {
        x: &saved.ctx,
        w: w(Part::AttnOutWeight),
        dy: &d_attn,
        rows: m,
    };
    let mut dctx = vec![0f32; saved.ctx.len()];
    attn_out.input(&mut dctx, false);
    let dqkv = attention::backward(
        &saved.qkv,
        &dctx,
        &cfg.key_bias,
        cfg.dims,
        cfg.scale,
        cfg.attn_dropout.as_ref(),
        &saved.attn_mask,
    );
    let qkv = DenseGrad {
        x,
        w: &p[pk.qkv_weight()],
        dy: &dqkv,
        rows: m,
    };
    let mut dx = dx1;
    qkv.input(&mut dx, true);

    // Parameter gradients, each written into its part of the packed gradient.
    let (n1w, n1b) = (pk.range(Part::Norm1Weight), pk.range(Part::Norm1Bias));
    dp[n1w].copy_from_slice(&dw);
    dp[n1b].copy_from_slice(&db);
    let grads = [
        (&out, Part::OutWeight, Part::OutBias),
        (&inter, Part::InterWeight, Part::InterBias),
        (&attn_out, Part::AttnOutWeight, Part::AttnOutBias),
    ];
    for (g, wp, bp) in grads {
        let (wr, br) = (pk.range(wp), pk.range(bp));
        let (head, tail) = dp.split_at_mut(br.start);
        g.params(&mut head[wr], &mut tail[..br.len()]);
    }
    let (wr, br) = (pk.qkv_weight(), pk.qkv_bias());
    let (head, tail) = dp.split_at_mut(br.start);
    qkv.params(&mut head[wr], &mut tail[..br.len()]);
    (dx, dp)
}
