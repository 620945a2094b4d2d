//! Forward pass of the fused layer, keeping what backward needs.

use super::super::gemm::{matmul, Mat, MatMut};
use super::{
    attention,
    mask::Bits,
    packed::Part,
    rows::{activate, residual_norm, NormSaved},
    Config,
};

/// The activations backward reads (inputs of each GEMM, norms' statistics, dropout masks).
pub struct Saved {
    /// Query, key and value projections `[tokens, 3h]`.
    pub qkv: Vec<f32>,
    /// Attention context `[tokens, h]` (input of the attention's output dense layer).
    pub ctx: Vec<f32>,
    /// Attention dropout mask.
    pub attn_mask: Bits,
    /// Output of the attention block `[tokens, h]` (input of the feed-forward block).
    pub x1: Vec<f32>,
    /// The attention block's norm.
    pub norm1: NormSaved,
    /// Intermediate pre-activation `[tokens, inter]`.
    pub u: Vec<f32>,
    /// Intermediate activation `[tokens, inter]`.
    pub g: Vec<f32>,
    /// The feed-forward block's norm.
    pub norm2: NormSaved,
}

/// y = bias rows + x·Wᵀ (the GEMM accumulates into the bias) for a row-major `x` of `rows × in` and `W` of `out × in`.
pub fn dense(x: &[f32], w: &[f32], bias: &[f32], rows: usize) -> Vec<f32> {
    let out = bias.len();
    let inp = x.len() / rows.max(1);
    let mut y = bias.repeat(rows);
    matmul(
        MatMut::rows(&mut y, rows, out),
        Mat::rows(x, rows, inp),
        Mat::rows(w, out, inp).t(),
        true,
        true,
    );
    y
}

/// The layer's output `[tokens, h]` for input `x` and packed parameters `p`.
pub fn forward(x: &[f32], p: &[f32], cfg: &Config) -> (Vec<f32>, Saved) {
    let m = cfg.dims.b * cfg.dims.t;
    let pk = cfg.packing;
    let w = |part: Part| &p[pk.range(part)];
    let qkv = dense(x, &p[pk.qkv_weight()], &p[pk.qkv_bias()], m);
    let (ctx, attn_mask) = attention::forward(
        &qkv,
        &cfg.key_bias,
        cfg.dims,
        cfg.scale,
        cfg.attn_dropout.as_ref(),
    );
    let mut x1 = dense(&ctx, w(Part::AttnOutWeight), w(Part::AttnOutBias), m);
    let norm1 = residual_norm(
        &mut x1,
        x,
        (w(Part::Norm1Weight), w(Part::Norm1Bias), cfg.eps),
        cfg.hidden_dropout[0].as_ref(),
    );
    let u = dense(&x1, w(Part::InterWeight), w(Part::InterBias), m);
    let g = activate(&u, cfg.act);
    let mut y = dense(&g, w(Part::OutWeight), w(Part::OutBias), m);
    let norm2 = residual_norm(
        &mut y,
        &x1,
        (w(Part::Norm2Weight), w(Part::Norm2Bias), cfg.eps),
        cfg.hidden_dropout[1].as_ref(),
    );
    let saved = Saved {
        qkv,
        ctx,
        attn_mask,
        x1,
        norm1,
        u,
        g,
        norm2,
    };
    (y, saved)
}
