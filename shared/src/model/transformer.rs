//! The post-LayerNorm transformer stack shared by BERT and RoBERTa (`encoder.layer.{i}.*`).

use candle_core::Tensor;

use super::{
    bert_config::BertConfig,
    fused,
    layers::{softmax_last_dim, Activation, LayerNorm, Linear},
    ForwardCtx, ModelError, Params,
};

/// Multi-head self-attention with HF names `attention.self.{query,key,value}` and `attention.output.*`.
#[derive(Debug, Clone)]
struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    attn_dropout: f64,
    hidden_dropout: f64,
}

impl SelfAttention {
    fn new(p: &Params, cfg: &BertConfig) -> Result<Self, ModelError> {
        let h = cfg.hidden_size;
        let s = p.pp("self");
        let o = p.pp("output");
        Ok(Self {
            query: Linear::new(&s.pp("query"), h, h)?,
            key: Linear::new(&s.pp("key"), h, h)?,
            value: Linear::new(&s.pp("value"), h, h)?,
            out: Linear::new(&o.pp("dense"), h, h)?,
            norm: LayerNorm::new(&o.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
            attn_dropout: cfg.attention_probs_dropout_prob,
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    fn split_heads(&self, xs: &Tensor) -> Result<Tensor, ModelError> {
        let (b, t, _) = xs.dims3()?;
        Ok(xs
            .reshape((b, t, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    fn forward(&self, xs: &Tensor, bias: &Bias, ctx: &ForwardCtx) -> Result<Tensor, ModelError> {
        let context = match bias {
            Bias::Keys(keys) => self.fused_context(xs, keys, ctx)?,
            Bias::Tensor(bias) => self.context(xs, bias, ctx)?,
        };
        let projected = ctx.dropout(&self.out.forward(&context)?, self.hidden_dropout)?;
        self.norm.forward(&(projected + xs)?)
    }

    fn scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }

    /// The attention context `[b, t, h]` from one fused node (CPU f32).
    fn fused_context(
        &self,
        xs: &Tensor,
        keys: &[f32],
        ctx: &ForwardCtx,
    ) -> Result<Tensor, ModelError> {
        let q = self.query.forward(xs)?;
        let k = self.key.forward(xs)?;
        let v = self.value.forward(xs)?;
        let drop = ctx.dropout_seed(self.attn_dropout)?;
        Ok(fused::attention(
            &q,
            &k,
            &v,
            self.heads,
            self.scale(),
            keys.to_vec(),
            drop,
        )?)
    }

    /// The attention context `[b, t, h]` from primitive ops.
    fn context(&self, xs: &Tensor, bias: &Tensor, ctx: &ForwardCtx) -> Result<Tensor, ModelError> {
        let (b, t, h) = xs.dims3()?;
        let q = self.split_heads(&self.query.forward(xs)?)?;
        let k = self.split_heads(&self.key.forward(xs)?)?;
        let v = self.split_heads(&self.value.forward(xs)?)?;
        let scale = self.scale();
        let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? * scale)?.broadcast_add(bias)?;
        let probs = ctx.dropout(&softmax_last_dim(&scores)?, self.attn_dropout)?;
        Ok(probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, h))?)
    }
}

/// One transformer layer: self-attention then the feed-forward block, each with residual + LayerNorm.
#[derive(Debug, Clone)]
struct TransformerLayer {
    attention: SelfAttention,
    intermediate: Linear,
    act: Activation,
    output: Linear,
    norm: LayerNorm,
    hidden_dropout: f64,
}

impl TransformerLayer {
    fn new(p: &Params, cfg: &BertConfig) -> Result<Self, ModelError> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            attention: SelfAttention::new(&p.pp("attention"), cfg)?,
            intermediate: Linear::new(&p.pp("intermediate").pp("dense"), h, i)?,
            act: Activation::parse(&cfg.hidden_act)?,
            output: Linear::new(&p.pp("output").pp("dense"), i, h)?,
            norm: LayerNorm::new(&p.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    fn forward(&self, xs: &Tensor, bias: &Bias, ctx: &ForwardCtx) -> Result<Tensor, ModelError> {
        let attended = self.attention.forward(xs, bias, ctx)?;
        let inner = self.act.forward(&self.intermediate.forward(&attended)?)?;
        let out = ctx.dropout(&self.output.forward(&inner)?, self.hidden_dropout)?;
        self.norm.forward(&(out + attended)?)
    }
}

/// The stack of transformer layers under `encoder.layer.{i}`.
#[derive(Debug, Clone)]
pub struct TransformerStack {
    layers: Vec<TransformerLayer>,
}

impl TransformerStack {
    /// Loads `cfg.num_hidden_layers` layers under `p` (the `encoder` prefix).
    pub fn new(p: &Params, cfg: &BertConfig) -> Result<Self, ModelError> {
        let lp = p.pp("layer");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| TransformerLayer::new(&lp.pp(&i.to_string()), cfg))
            .collect::<Result<_, _>>()?;
        Ok(Self { layers })
    }

    /// Runs all layers; `mask` is the `[batch, seq]` f32 attention mask (1 = attend).
    pub fn forward(
        &self,
        xs: &Tensor,
        mask: &Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor, ModelError> {
        let tensor = attention_bias(mask)?;
        let bias = match fused::applies(xs) {
            true => Bias::Keys(tensor.flatten_all()?.to_vec1::<f32>()?),
            false => Bias::Tensor(tensor),
        };
        let mut hidden = xs.clone();
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &bias, ctx)?;
        }
        Ok(hidden)
    }
}

/// The additive attention bias of a batch's padded keys, in the form its attention takes.
enum Bias {
    /// `[batch, 1, 1, seq]`, broadcast over the primitive ops' scores.
    Tensor(Tensor),
    /// Flat per key, `[batch · seq]`, for the fused attention node.
    Keys(Vec<f32>),
}

/// Large negative value added to the scores of padded keys (exp underflows to exactly 0).
const MASKED: f64 = -1e9;

/// Turns a `[batch, seq]` 0/1 mask into an additive `[batch, 1, 1, seq]` attention bias.
pub fn attention_bias(mask: &Tensor) -> Result<Tensor, ModelError> {
    let (b, t) = mask.dims2()?;
    let bias = ((mask.ones_like()? - mask)? * MASKED)?;
    Ok(bias.reshape((b, 1, 1, t))?)
}
