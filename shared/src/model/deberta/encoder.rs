//! `DebertaV2Encoder`: the layer stack, the shared relative embeddings (`encoder.rel_embeddings`,
//! optionally `encoder.LayerNorm`) and the optional convolution after the first layer (`encoder.conv`).

use candle_core::Tensor;

use super::{
    attention::{AttentionInputs, DisentangledAttention},
    config::{DebertaConfig, RelativeSpec},
    position::RelativeIndex,
};
use crate::model::{
    layers::{Activation, LayerNorm, Linear},
    precision, ForwardCtx, Init, ModelError, Params,
};

/// One layer: disentangled attention, then the feed-forward block with residual + LayerNorm.
#[derive(Debug, Clone)]
struct DebertaLayer {
    attention: DisentangledAttention,
    intermediate: Linear,
    act: Activation,
    output: Linear,
    norm: LayerNorm,
    hidden_dropout: f64,
}

impl DebertaLayer {
    fn new(p: &Params, cfg: &DebertaConfig) -> Result<Self, ModelError> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            attention: DisentangledAttention::new(&p.pp("attention"), cfg)?,
            intermediate: Linear::new(&p.pp("intermediate").pp("dense"), h, i)?,
            act: Activation::parse(&cfg.hidden_act)?,
            output: Linear::new(&p.pp("output").pp("dense"), i, h)?,
            norm: LayerNorm::new(&p.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        inputs: &AttentionInputs,
        ctx: &ForwardCtx,
    ) -> Result<Tensor, ModelError> {
        let attended = self.attention.forward(xs, inputs, ctx)?;
        let inner = self.act.forward(&self.intermediate.forward(&attended)?)?;
        let out = ctx.dropout(&self.output.forward(&inner)?, self.hidden_dropout)?;
        self.norm.forward(&(out + attended)?)
    }
}

/// transformers' `ConvLayer`: a 1-D convolution over the embeddings, added to the first layer's output.
///
/// The convolution is written as one matrix product per group over `kernel` shifted copies of the
/// input, because candle's `conv1d` backward handles a single group only.
#[derive(Debug, Clone)]
struct ConvLayer {
    /// `[hidden, hidden / groups, kernel]` (`encoder.conv.conv.weight`).
    weight: Tensor,
    bias: Tensor,
    kernel: usize,
    groups: usize,
    act: Activation,
    norm: LayerNorm,
    dropout: f64,
}

impl ConvLayer {
    fn new(p: &Params, cfg: &DebertaConfig) -> Result<Self, ModelError> {
        let h = cfg.hidden_size;
        let (kernel, groups) = (cfg.conv_kernel_size, cfg.conv_groups);
        let c = p.pp("conv");
        Ok(Self {
            weight: c.get("weight", &[h, h / groups, kernel], Init::Normal)?,
            bias: c.get("bias", &[h], Init::Zeros)?,
            kernel,
            groups,
            act: Activation::parse(&cfg.conv_act)?,
            norm: LayerNorm::new(&p.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    /// `Conv1d(padding = (kernel - 1) / 2, groups)` over `[batch, seq, hidden]`.
    fn conv(&self, xs: &Tensor) -> Result<Tensor, ModelError> {
        let (b, t, h) = xs.dims3()?;
        let pad = (self.kernel - 1) / 2;
        let padded = xs.pad_with_zeros(1, pad, pad)?;
        let width = h / self.groups;
        let mut outs = Vec::with_capacity(self.groups);
        for g in 0..self.groups {
            let input = padded.narrow(2, g * width, width)?;
            // [b, t, kernel * width], ordered (shift, channel).
            let shifted = (0..self.kernel)
                .map(|j| input.narrow(1, j, t))
                .collect::<Result<Vec<_>, _>>()?;
            let unfolded = Tensor::cat(&shifted, 2)?.reshape((b * t, self.kernel * width))?;
            // [width_out, width_in, kernel] → [width_out, kernel * width_in] in the same order.
            let w = self
                .weight
                .narrow(0, g * width, width)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((width, self.kernel * width))?;
            outs.push(precision::matmul(&unfolded, &w.t()?)?);
        }
        let out = Tensor::cat(&outs, 1)?.broadcast_add(&self.bias)?;
        Ok(out.reshape((b, t, h))?)
    }

    fn forward(
        &self,
        embeddings: &Tensor,
        residual: &Tensor,
        mask: &Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor, ModelError> {
        let out = self.conv(embeddings)?.broadcast_mul(mask)?;
        let out = self.act.forward(&ctx.dropout(&out, self.dropout)?)?;
        Ok(self.norm.forward(&(residual + out)?)?.broadcast_mul(mask)?)
    }
}

/// The encoder of a DeBERTa-v2/v3 body (`encoder.*`).
#[derive(Debug, Clone)]
pub struct DebertaEncoder {
    layers: Vec<DebertaLayer>,
    /// `encoder.rel_embeddings.weight`, `[2 * span, hidden]`, with relative attention.
    rel_embeddings: Option<(Tensor, RelativeSpec)>,
    rel_norm: Option<LayerNorm>,
    conv: Option<ConvLayer>,
}

impl DebertaEncoder {
    /// Loads the encoder under `p` (the `encoder` prefix).
    pub fn new(p: &Params, cfg: &DebertaConfig) -> Result<Self, ModelError> {
        let h = cfg.hidden_size;
        let lp = p.pp("layer");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DebertaLayer::new(&lp.pp(&i.to_string()), cfg))
            .collect::<Result<_, _>>()?;
        let rel_embeddings = match cfg.relative() {
            Some(spec) => {
                let w = p
                    .pp("rel_embeddings")
                    .get("weight", &[2 * spec.span, h], Init::Normal)?;
                Some((w, spec))
            }
            None => None,
        };
        // transformers creates encoder.LayerNorm for norm_rel_ebd even without relative attention,
        // but only uses it on relative embeddings: without them it is not loaded (and passes through
        // a save unchanged).
        let rel_norm = if rel_embeddings.is_some() && cfg.norm_rel_layer_norm()? {
            Some(LayerNorm::new(&p.pp("LayerNorm"), h, cfg.layer_norm_eps)?)
        } else {
            None
        };
        let conv = if cfg.conv_kernel_size > 0 {
            Some(ConvLayer::new(&p.pp("conv"), cfg)?)
        } else {
            None
        };
        Ok(Self {
            layers,
            rel_embeddings,
            rel_norm,
            conv,
        })
    }

    /// Runs the stack on the embeddings; `mask` is the `[batch, seq]` f32 attention mask.
    pub fn forward(
        &self,
        embeddings: &Tensor,
        mask: &Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor, ModelError> {
        let (b, t, _) = embeddings.dims3()?;
        let relative = match &self.rel_embeddings {
            Some((weight, spec)) => {
                let rel = match &self.rel_norm {
                    Some(norm) => norm.forward(weight)?,
                    None => weight.clone(),
                };
                let index = RelativeIndex::new(spec, t, embeddings.device())?;
                Some((rel, index))
            }
            None => None,
        };
        let inputs = AttentionInputs::new(mask, relative)?;
        let token_mask = mask.reshape((b, t, 1))?;
        let mut hidden = embeddings.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            hidden = layer.forward(&hidden, &inputs, ctx)?;
            if let (0, Some(conv)) = (i, &self.conv) {
                hidden = conv.forward(embeddings, &hidden, &token_mask, ctx)?;
            }
        }
        Ok(hidden)
    }
}
