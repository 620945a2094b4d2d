//! One post-LN transformer layer (BERT/RoBERTa `encoder.layer.{i}`: self-attention, then dense,
//! dropout, residual and LayerNorm; feed-forward, then dense, dropout, residual and LayerNorm) as a
//! single graph node with a hand-written backward, for f32 on the CPU.
//!
//! Built from primitive candle ops the layer is about forty nodes; for each of them candle's
//! backprop zero-fills a gradient buffer and adds into it, allocates its output, and runs its own
//! thread pool, which leaves the second core idle a quarter of the time. Here each dense layer is
//! one GEMM into its bias rows (backward: two GEMMs and a column sum), the activation and dropout +
//! residual + norm and their backward are one pass each, and attention runs one batch element per
//! task (so a batch of one sequence runs its attention on one thread). Partial sums are reduced in
//! order: a run is bit-for-bit repeatable for a given thread count. What backward needs is kept by the node between the passes (or recomputed from its inputs
//! when a forward pass ran without keeping it).

mod attention;
mod backward;
mod forward;
mod mask;
mod packed;
mod rows;

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Device, Layout, Result, Shape, Storage, Tensor};

pub use packed::{Packing, Part, PARTS};

use super::{dropout::Dropout, rows::f32_slice};
use crate::model::layers::Activation;

/// Batch, sequence, hidden, head count and head widths.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    b: usize,
    t: usize,
    h: usize,
    heads: usize,
    d: usize,
}

/// A layer's fixed settings: shape of its parameters, norm ε, activation, dropout.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// Parameter widths.
    pub packing: Packing,
    /// Attention heads.
    pub heads: usize,
    /// LayerNorm ε.
    pub eps: f64,
    /// Feed-forward activation.
    pub act: Activation,
}

/// One forward pass's dropout (probability, seed) draws, `None` where off: on the attention
/// probabilities, then after the attention's output dense layer, then after the feed-forward output.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerDropout {
    /// On the attention probabilities.
    pub attention: Option<(f64, u64)>,
    /// After the attention block's dense layer.
    pub attention_output: Option<(f64, u64)>,
    /// After the feed-forward block's output dense layer.
    pub output: Option<(f64, u64)>,
}

/// Everything the passes read besides the tensors.
struct Config {
    dims: Dims,
    packing: Packing,
    scale: f32,
    eps: f32,
    act: Activation,
    key_bias: Arc<[f32]>,
    attn_dropout: Option<Dropout>,
    hidden_dropout: [Option<Dropout>; 2],
}

/// The graph node.
struct EncoderLayer {
    cfg: Config,
    /// Keep the activations for backward (training) or drop them (inference).
    keep: bool,
    saved: Mutex<Option<forward::Saved>>,
}

impl EncoderLayer {
    fn check(&self, x: &Layout, p: &Layout) -> Result<()> {
        let Dims { b, t, h, .. } = self.cfg.dims;
        if x.shape().dims() != [b, t, h] {
            candle_core::bail!(
                "fused layer: input {:?}, expected [{b}, {t}, {h}]",
                x.shape()
            );
        }
        if p.shape().elem_count() != self.cfg.packing.total() {
            candle_core::bail!(
                "fused layer: {} parameters, expected {}",
                p.shape().elem_count(),
                self.cfg.packing.total()
            );
        }
        Ok(())
    }
}

/// The f32 values of a CPU tensor's (contiguous) storage.
fn cpu_values<'a>(storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => f32_slice(cpu, layout),
        _ => candle_core::bail!("fused layer: CPU tensors expected"),
    }
}

impl CustomOp2 for EncoderLayer {
    fn name(&self) -> &'static str {
        "coldfuse-encoder-layer"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.check(l1, l2)?;
        let (x, p) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (y, saved) = forward::forward(x, p, &self.cfg);
        if self.keep {
            *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (ps, pl) = p.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        self.check(xl, pl)?;
        let (xv, pv, gv) = (
            cpu_values(&xs, xl)?,
            cpu_values(&ps, pl)?,
            cpu_values(&gs, gl)?,
        );
        if gv.len() != xv.len() {
            candle_core::bail!("fused layer: gradient of shape {:?}", gl.shape());
        }
        let kept = self.saved.lock().unwrap_or_else(|e| e.into_inner()).take();
        let saved = match kept {
            Some(saved) => saved,
            None => forward::forward(xv, pv, &self.cfg).1,
        };
        let (dx, dp) = backward::backward(xv, pv, gv, &saved, &self.cfg);
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), &Device::Cpu)?),
            Some(Tensor::from_vec(dp, p.shape(), &Device::Cpu)?),
        ))
    }
}

/// The layer applied to `x` (`[batch, seq, h]`, f32 on the CPU) with packed parameters `params`
/// (see [`Packing::pack`]) and `key_bias` (`[batch · seq]`, added to every query's score of each
/// key: 0, or a large negative number for padding). `keep` keeps the activations for backward.
pub fn encoder_layer(
    x: &Tensor,
    params: &Tensor,
    key_bias: Arc<[f32]>,
    spec: &LayerSpec,
    dropout: LayerDropout,
    keep: bool,
) -> Result<Tensor> {
    let (b, t, h) = x.dims3()?;
    if b * t == 0 || spec.packing.inter == 0 {
        candle_core::bail!("fused layer: empty batch ({b}×{t}) or intermediate width 0");
    }
    if spec.heads == 0 || !h.is_multiple_of(spec.heads) || spec.packing.h != h {
        candle_core::bail!(
            "fused layer: hidden {h} with {} heads and packing for {}",
            spec.heads,
            spec.packing.h
        );
    }
    if key_bias.len() != b * t {
        candle_core::bail!(
            "fused layer: key bias for {} keys, not {b}×{t}",
            key_bias.len()
        );
    }
    let drop = |d: Option<(f64, u64)>| d.map(|(p, seed)| Dropout::new(p, seed));
    let op = EncoderLayer {
        cfg: Config {
            dims: Dims {
                b,
                t,
                h,
                heads: spec.heads,
                d: h / spec.heads,
            },
            packing: spec.packing,
            scale: (1.0 / ((h / spec.heads) as f64).sqrt()) as f32,
            eps: spec.eps as f32,
            act: spec.act,
            key_bias,
            attn_dropout: drop(dropout.attention),
            hidden_dropout: [drop(dropout.attention_output), drop(dropout.output)],
        },
        keep,
        saved: Mutex::new(None),
    };
    x.contiguous()?.apply_op2(&params.contiguous()?, op)
}
