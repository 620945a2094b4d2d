//! DeBERTa-v2/v3 (He et al., arXiv:2006.03654 and arXiv:2111.09543) as transformers'
//! `DebertaV2Model` + `DebertaV2ForSequenceClassification`.
//!
//! - `embeddings.rs`: word (+ absolute position) (+ segment) embeddings, `embed_proj`, LayerNorm, mask.
//! - `attention.rs`: disentangled attention (content→position and position→content terms).
//! - `position.rs`: relative positions and their log buckets, computed on the host.
//! - `encoder.rs`: the layer stack, shared relative embeddings and the optional convolution layer.
//! - `config.rs`: config.json, with every option we do not compute exactly rejected.
//!
//! The body is what `AutoModel` loads (no pooler). The classification head is transformers'
//! `ContextPooler` (`pooler.dense`) + `classifier`: both are task-specific and never fused.

pub mod attention;
pub mod config;
pub mod embeddings;
pub mod encoder;
pub mod position;

use candle_core::Tensor;

pub use config::DebertaConfig;

use self::{embeddings::DebertaEmbeddings, encoder::DebertaEncoder};
use super::{
    layers::{Activation, Linear},
    Body, BodyOutput, ForwardCtx, Head, ModelError, Params,
};
use crate::batch::Batch;

/// transformers' `DebertaV2Model`.
#[derive(Debug, Clone)]
pub struct DebertaBody {
    embeddings: DebertaEmbeddings,
    encoder: DebertaEncoder,
}

impl DebertaBody {
    /// Loads the body under `p`.
    pub fn new(p: &Params, cfg: &DebertaConfig) -> Result<Self, ModelError> {
        Ok(Self {
            embeddings: DebertaEmbeddings::new(&p.pp("embeddings"), cfg)?,
            encoder: DebertaEncoder::new(&p.pp("encoder"), cfg)?,
        })
    }
}

impl Body for DebertaBody {
    fn forward(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<BodyOutput, ModelError> {
        let emb = self.embeddings.forward(batch, ctx)?;
        let hidden = self.encoder.forward(&emb, &batch.mask_t, ctx)?;
        Ok(BodyOutput {
            hidden,
            pooled: None,
        })
    }
}

/// `DebertaV2ForSequenceClassification`'s head: first token → dropout → `pooler.dense` → activation
/// (`ContextPooler`) → dropout → `classifier`.
#[derive(Debug, Clone)]
pub struct DebertaHead {
    pooler: Linear,
    act: Activation,
    pooler_dropout: f64,
    classifier: Linear,
    dropout: f64,
}

impl DebertaHead {
    /// Loads or creates the head under `p` (names `pooler.dense.*`, `classifier.*`).
    pub fn new(p: &Params, cfg: &DebertaConfig, num_labels: usize) -> Result<Self, ModelError> {
        let h = cfg.hidden_size;
        Ok(Self {
            pooler: Linear::new(&p.pp("pooler").pp("dense"), h, h)?,
            act: Activation::parse(&cfg.pooler_hidden_act)?,
            pooler_dropout: cfg.pooler_dropout,
            classifier: Linear::new(&p.pp("classifier"), h, num_labels)?,
            dropout: cfg.head_dropout(),
        })
    }
}

impl Head for DebertaHead {
    fn forward(&self, out: &BodyOutput, ctx: &ForwardCtx) -> Result<Tensor, ModelError> {
        let first = out.hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self
            .pooler
            .forward(&ctx.dropout(&first, self.pooler_dropout)?)?;
        let pooled = self.act.forward(&pooled)?;
        self.classifier
            .forward(&ctx.dropout(&pooled, self.dropout)?)
    }
}

/// Builds a DeBERTa-v2/v3 body from a config.json value.
pub fn body(config: &serde_json::Value, p: &Params) -> Result<Box<dyn Body>, ModelError> {
    Ok(Box::new(DebertaBody::new(
        p,
        &DebertaConfig::from_json(config)?,
    )?))
}

/// Builds a DeBERTa-v2/v3 classification head from a config.json value.
pub fn head(
    config: &serde_json::Value,
    p: &Params,
    num_labels: usize,
) -> Result<Box<dyn Head>, ModelError> {
    Ok(Box::new(DebertaHead::new(
        p,
        &DebertaConfig::from_json(config)?,
        num_labels,
    )?))
}
