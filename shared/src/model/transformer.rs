//! The post-LayerNorm transformer stack shared by BERT and RoBERTa (`encoder.layer.{i}.*`).

use std::sync::Arc;

use candle_core::Tensor;

use super::{
    bert_config::BertConfig,
    fused::{
        self,
        layer::{LayerDropout, LayerSpec, Packing},
    },
    layers::{softmax_last_dim, Activation, LayerNorm, Linear},
    precision, ForwardCtx, ModelError, Params, Precision,
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

    fn forward(&self, xs: &Tensor, bias: &Tensor, ctx: &ForwardCtx) -> Result<Tensor, ModelError> {
        let context = self.context(xs, bias, ctx)?;
        let projected = ctx.dropout(&self.out.forward(&context)?, self.hidden_dropout)?;
        self.norm.forward(&(projected + xs)?)
    }

    fn scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }

    /// The attention context `[b, t, h]` from primitive ops.
    fn context(&self, xs: &Tensor, bias: &Tensor, ctx: &ForwardCtx) -> Result<Tensor, ModelError> {
        let (b, t, h) = xs.dims3()?;
        let q = self.split_heads(&self.query.forward(xs)?)?;
        let k = self.split_heads(&self.key.forward(xs)?)?;
        let v = self.split_heads(&self.value.forward(xs)?)?;
        let scale = self.scale();
        let scores = (precision::matmul(&q, &k.transpose(2, 3)?.contiguous()?)? * scale)?
            .broadcast_add(bias)?;
        let probs = ctx.dropout(&softmax_last_dim(&scores)?, self.attn_dropout)?;
        Ok(precision::matmul(&probs, &v)?
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
        match bias {
            Bias::Keys(keys) => self.fused_forward(xs, keys, ctx),
            Bias::Tensor(bias) => self.composed_forward(xs, bias, ctx),
        }
    }

    /// The layer from primitive ops (any device and dtype).
    fn composed_forward(
        &self,
        xs: &Tensor,
        bias: &Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor, ModelError> {
        let attended = self.attention.forward(xs, bias, ctx)?;
        let inner = self.act.forward(&self.intermediate.forward(&attended)?)?;
        let out = ctx.dropout(&self.output.forward(&inner)?, self.hidden_dropout)?;
        self.norm.forward(&(out + attended)?)
    }

    /// The layer as one fused node (CPU f32), drawing its dropout seeds in the composed order.
    fn fused_forward(
        &self,
        xs: &Tensor,
        keys: &Arc<[f32]>,
        ctx: &ForwardCtx,
    ) -> Result<Tensor, ModelError> {
        let a = &self.attention;
        let weights = self.fused_params()?;
        let spec = LayerSpec {
            packing: Packing {
                h: a.heads * a.head_dim,
                inter: self.intermediate.weight().dim(0)?,
            },
            heads: a.heads,
            eps: self.norm.eps(),
            act: self.act,
        };
        let dropout = LayerDropout {
            attention: ctx.dropout_seed(a.attn_dropout)?,
            attention_output: ctx.dropout_seed(a.hidden_dropout)?,
            output: ctx.dropout_seed(self.hidden_dropout)?,
        };
        let packed = spec.packing.pack(&weights)?;
        Ok(fused::layer::encoder_layer(
            xs,
            &packed,
            keys.clone(),
            &spec,
            dropout,
            ctx.expects_backward(),
        )?)
    }

    /// The layer's 16 tensors in the fused node's packing order.
    fn fused_params(&self) -> Result<[&Tensor; 16], ModelError> {
        let a = &self.attention;
        Ok([
            a.query.weight(),
            a.key.weight(),
            a.value.weight(),
            bias(&a.query)?,
            bias(&a.key)?,
            bias(&a.value)?,
            a.out.weight(),
            bias(&a.out)?,
            a.norm.weight(),
            a.norm.bias(),
            self.intermediate.weight(),
            bias(&self.intermediate)?,
            self.output.weight(),
            bias(&self.output)?,
            self.norm.weight(),
            self.norm.bias(),
        ])
    }
}

/// A dense layer's bias, which the fused layer needs.
fn bias(l: &Linear) -> Result<&Tensor, ModelError> {
    l.bias()
        .ok_or_else(|| ModelError::BadInput("fused layer needs dense biases".into()))
}

impl TransformerLayer {
    /// Whether every tensor of the layer is f32 on the CPU (what the fused node computes).
    fn fusable(&self) -> bool {
        self.fused_params()
            .map(|ts| ts.iter().all(|t| fused::applies(t)))
            .unwrap_or(false)
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
        // The fused node computes in f32: under bf16 autocast the composed ops run.
        let fusable = fused::applies(xs)
            && precision::current() == Precision::F32
            && self.layers.iter().all(TransformerLayer::fusable);
        let bias = match fusable {
            true => Bias::Keys(tensor.flatten_all()?.to_vec1::<f32>()?.into()),
            false => Bias::Tensor(tensor),
        };
        self.run(xs, &bias, ctx)
    }

    fn run(&self, xs: &Tensor, bias: &Bias, ctx: &ForwardCtx) -> Result<Tensor, ModelError> {
        let mut hidden = xs.clone();
        for layer in &self.layers {
            hidden = layer.forward(&hidden, bias, ctx)?;
        }
        Ok(hidden)
    }

    /// [`Self::forward`] from primitive ops only, whatever the device (the fused node's reference).
    #[cfg(test)]
    fn forward_composed(
        &self,
        xs: &Tensor,
        mask: &Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor, ModelError> {
        self.run(xs, &Bias::Tensor(attention_bias(mask)?), ctx)
    }
}

/// The additive attention bias of a batch's padded keys, in the form its attention takes.
enum Bias {
    /// `[batch, 1, 1, seq]`, broadcast over the primitive ops' scores.
    Tensor(Tensor),
    /// Flat per key, `[batch · seq]`, for the fused layer nodes (shared by all layers).
    Keys(Arc<[f32]>),
}

/// Large negative value added to the scores of padded keys (exp underflows to exactly 0).
const MASKED: f64 = -1e9;

/// Turns a `[batch, seq]` 0/1 mask into an additive `[batch, 1, 1, seq]` attention bias.
pub fn attention_bias(mask: &Tensor) -> Result<Tensor, ModelError> {
    let (b, t) = mask.dims2()?;
    let bias = ((mask.ones_like()? - mask)? * MASKED)?;
    Ok(bias.reshape((b, 1, 1, t))?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::model::fused::tests::{max_abs, randn};

    /// A two-layer stack with every tensor random (norm scales and biases too).
    fn stack(act: &str, dropout: f64) -> (TransformerStack, Params) {
        let cfg = BertConfig::from_json(&serde_json::json!({
            "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 48,
            "num_hidden_layers": 2, "hidden_act": act, "layer_norm_eps": 1e-5,
            "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout,
        }))
        .unwrap();
        let params = Params::init(&Device::Cpu, 3, 0.2);
        let stack = TransformerStack::new(&params.pp("encoder"), &cfg).unwrap();
        for (i, var) in params.vars().values().enumerate() {
            var.set(&randn(var.dims(), 0.4, 100 + i as u64)).unwrap();
        }
        (stack, params)
    }

    /// 3 sequences of 37 tokens, the second and third padded after 27 and 7 tokens.
    fn inputs() -> (Tensor, Tensor) {
        let mask: Vec<f32> = (0..3)
            .flat_map(|b| (0..37).map(move |i| f32::from(i < [37, 27, 7][b])))
            .collect();
        (
            randn(&[3, 37, 32], 1.0, 1),
            Tensor::from_vec(mask, (3, 37), &Device::Cpu).unwrap(),
        )
    }

    /// Output and the gradients (input first, then every parameter by name) of Σ y⊙r.
    fn outputs(
        params: &Params,
        run: impl Fn(&Tensor) -> Tensor,
    ) -> (Tensor, Vec<(String, Tensor)>) {
        let (x, _) = inputs();
        let x = Var::from_tensor(&x).unwrap();
        let y = run(x.as_tensor());
        let r = randn(y.dims(), 1.0, 9);
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let mut gs = vec![(
            "input".to_string(),
            grads.get(x.as_tensor()).unwrap().clone(),
        )];
        for (name, var) in params.vars() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            gs.push((name, g.clone()));
        }
        (y, gs)
    }

    fn assert_close(
        what: &str,
        a: &(Tensor, Vec<(String, Tensor)>),
        b: &(Tensor, Vec<(String, Tensor)>),
    ) {
        let e = max_abs(&a.0, &b.0);
        assert!(e < 2e-5, "{what}: outputs differ by {e}");
        for ((name, ga), (_, gb)) in a.1.iter().zip(&b.1) {
            let e = max_abs(ga, gb);
            let scale = max_abs(gb, &gb.zeros_like().unwrap()).max(1.0);
            assert!(
                e < 2e-5 * scale,
                "{what}: gradient of {name} differs by {e} (scale {scale})"
            );
        }
    }

    #[test]
    fn fused_layers_match_the_composed_ops_with_dropout_and_padding() {
        for (act, dropout) in [
            ("gelu", 0.1),
            ("gelu", 0.0),
            ("gelu_new", 0.2),
            ("relu", 0.1),
            ("tanh", 0.0),
        ] {
            let (stack, params) = stack(act, dropout);
            let (_, mask) = inputs();
            let fused = outputs(&params, |x| {
                stack.forward(x, &mask, &ForwardCtx::train(11)).unwrap()
            });
            let composed = outputs(&params, |x| {
                stack
                    .forward_composed(x, &mask, &ForwardCtx::train(11))
                    .unwrap()
            });
            assert_close(&format!("{act}, dropout {dropout}"), &fused, &composed);
            if dropout > 0.0 {
                let other = outputs(&params, |x| {
                    stack.forward(x, &mask, &ForwardCtx::train(12)).unwrap()
                });
                assert!(
                    max_abs(&other.0, &fused.0) > 1e-3,
                    "the seed changes the masks"
                );
            }
        }
    }

    #[test]
    fn a_fused_pass_that_kept_nothing_recomputes_for_backward() {
        let (stack, params) = stack("gelu", 0.0);
        let (_, mask) = inputs();
        let kept = outputs(&params, |x| {
            stack
                .forward(x, &mask, &ForwardCtx::train_without_dropout())
                .unwrap()
        });
        let recomputed = outputs(&params, |x| {
            stack.forward(x, &mask, &ForwardCtx::eval()).unwrap()
        });
        assert_close("recomputed", &kept, &recomputed);
        let composed = outputs(&params, |x| {
            stack
                .forward_composed(x, &mask, &ForwardCtx::eval())
                .unwrap()
        });
        assert_close("eval", &recomputed, &composed);
    }
}
