//! Disentangled self-attention (He et al., arXiv:2006.03654, §3.1): content-to-content scores plus
//! content-to-position (`c2p`) and position-to-content (`p2c`) terms read from shared relative
//! embeddings, as transformers' `DisentangledSelfAttention` + `DebertaV2SelfOutput` compute them.

use candle_core::Tensor;

use super::{
    config::{DebertaConfig, PosAttType},
    position::RelativeIndex,
};
use crate::model::{
    layers::{softmax_last_dim, LayerNorm, Linear},
    precision, ForwardCtx, ModelError, Params,
};

/// What every layer's attention shares within one forward pass.
#[derive(Debug, Clone)]
pub struct AttentionInputs {
    /// `[batch, 1, seq, seq]` 1 where query and key are both real tokens, else 0.
    pub keep: Tensor,
    /// `[batch, 1, seq, seq]` 0 where `keep` is 1, else `f32::MIN` (transformers' `masked_fill`).
    pub fill: Tensor,
    /// The (normalised) relative embeddings `[2 * span, hidden]` and their gather indices.
    pub relative: Option<(Tensor, RelativeIndex)>,
}

impl AttentionInputs {
    /// Builds the pairwise mask from a `[batch, seq]` 0/1 mask (`get_attention_mask`).
    pub fn new(
        mask: &Tensor,
        relative: Option<(Tensor, RelativeIndex)>,
    ) -> Result<Self, ModelError> {
        let (b, t) = mask.dims2()?;
        let keep = mask
            .reshape((b, 1, 1, t))?
            .broadcast_mul(&mask.reshape((b, 1, t, 1))?)?;
        // (keep - 1) * MAX is exactly -MAX = f32::MIN where masked and 0 elsewhere, so that
        // `scores * keep + fill` reproduces masked_fill bit for bit (a fully masked row is uniform).
        let fill = ((&keep - 1.0)? * f64::from(f32::MAX))?;
        Ok(Self {
            keep,
            fill,
            relative,
        })
    }
}

/// `attention.self.*` and `attention.output.*` of one layer.
#[derive(Debug, Clone)]
pub struct DisentangledAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    /// `pos_key_proj` (for `c2p`) and `pos_query_proj` (for `p2c`), absent with `share_att_key`.
    pos_key: Option<Linear>,
    pos_query: Option<Linear>,
    pos_att: PosAttType,
    out: Linear,
    norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    attn_dropout: f64,
    hidden_dropout: f64,
}

impl DisentangledAttention {
    /// Loads the attention block under `p` (the `attention` prefix of a layer).
    pub fn new(p: &Params, cfg: &DebertaConfig) -> Result<Self, ModelError> {
        let h = cfg.hidden_size;
        let s = p.pp("self");
        let o = p.pp("output");
        let pos_att = cfg.pos_att_type()?;
        let separate = cfg.relative_attention && !cfg.share_att_key;
        let pos_key = if separate && pos_att.c2p {
            Some(Linear::new(&s.pp("pos_key_proj"), h, h)?)
        } else {
            None
        };
        let pos_query = if separate && pos_att.p2c {
            Some(Linear::new(&s.pp("pos_query_proj"), h, h)?)
        } else {
            None
        };
        Ok(Self {
            query: Linear::new(&s.pp("query_proj"), h, h)?,
            key: Linear::new(&s.pp("key_proj"), h, h)?,
            value: Linear::new(&s.pp("value_proj"), h, h)?,
            pos_key,
            pos_query,
            pos_att,
            out: Linear::new(&o.pp("dense"), h, h)?,
            norm: LayerNorm::new(&o.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            attn_dropout: cfg.attention_probs_dropout_prob,
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    /// `[batch, seq, hidden]` → `[batch, heads, seq, head_dim]`.
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor, ModelError> {
        let (b, t, _) = xs.dims3()?;
        Ok(xs
            .reshape((b, t, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// Projected relative embeddings `[rows, hidden]` → `[1, heads, rows, head_dim]`.
    fn split_rel(&self, xs: &Tensor) -> Result<Tensor, ModelError> {
        let rows = xs.dim(0)?;
        Ok(xs
            .reshape((rows, self.heads, self.head_dim))?
            .transpose(0, 1)?
            .contiguous()?
            .unsqueeze(0)?)
    }

    /// Runs attention plus the output block (dense, dropout, residual, LayerNorm).
    pub fn forward(
        &self,
        xs: &Tensor,
        inputs: &AttentionInputs,
        ctx: &ForwardCtx,
    ) -> Result<Tensor, ModelError> {
        let (b, t, h) = xs.dims3()?;
        let q = self.split_heads(&self.query.forward(xs)?)?;
        let k = self.split_heads(&self.key.forward(xs)?)?;
        let v = self.split_heads(&self.value.forward(xs)?)?;
        // transformers: sqrt of an f32 tensor, and the key divided by it before the product.
        let scale = f64::from(((self.head_dim * self.pos_att.scale_factor()) as f32).sqrt());
        let mut scores = precision::matmul(&q, &(k.t()? / scale)?.contiguous()?)?;
        if let Some((rel, index)) = &inputs.relative {
            let rel = ctx.dropout(rel, self.hidden_dropout)?;
            if let Some(bias) = self.relative_scores(&q, &k, &rel, index, scale)? {
                scores = (scores + bias)?;
            }
        }
        let scores = scores
            .broadcast_mul(&inputs.keep)?
            .broadcast_add(&inputs.fill)?;
        let probs = ctx.dropout(&softmax_last_dim(&scores)?, self.attn_dropout)?;
        let context = precision::matmul(&probs, &v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, h))?;
        let projected = ctx.dropout(&self.out.forward(&context)?, self.hidden_dropout)?;
        self.norm.forward(&(projected + xs)?)
    }

    /// The `c2p` + `p2c` terms (`disentangled_attention_bias`), `[batch, heads, seq, seq]`.
    fn relative_scores(
        &self,
        q: &Tensor,
        k: &Tensor,
        rel: &Tensor,
        index: &RelativeIndex,
        scale: f64,
    ) -> Result<Option<Tensor>, ModelError> {
        // With share_att_key the content projections serve the positions too; otherwise the separate
        // projections exist exactly for the terms in pos_att_type.
        let pos_key = self.pos_key.as_ref().unwrap_or(&self.key);
        let pos_query = self.pos_query.as_ref().unwrap_or(&self.query);
        let mut bias: Option<Tensor> = None;
        if self.pos_att.c2p {
            let pk = self.split_rel(&pos_key.forward(rel)?)?;
            let att = precision::broadcast_matmul(q, &pk.t()?)?;
            let c2p = (RelativeIndex::select(&att, &index.c2p)? / scale)?;
            bias = Some(c2p);
        }
        if self.pos_att.p2c {
            let pq = self.split_rel(&pos_query.forward(rel)?)?;
            let att = precision::broadcast_matmul(k, &pq.t()?)?;
            let p2c = (RelativeIndex::select(&att, &index.p2c)? / scale)?;
            bias = Some(match bias {
                Some(c2p) => (c2p + p2c)?,
                None => p2c,
            });
        }
        Ok(bias)
    }
}
