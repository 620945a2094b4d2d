//! RoBERTa (Liu et al., arXiv:1907.11692) as transformers' `RobertaModel` + `RobertaForSequenceClassification`.
//!
//! Also DistilRoBERTa (a 6-layer RoBERTa checkpoint). Same layers as BERT; position ids start at
//! `padding_idx + 1`, there is no pooler in the classification model, and the head is dense+tanh+out_proj.

use candle_core::Tensor;

use super::{
    bert::{Embeddings, Positions},
    bert_config::BertConfig,
    layers::Linear,
    transformer::TransformerStack,
    Body, BodyOutput, ForwardCtx, Head, ModelError, Params,
};
use crate::batch::Batch;

/// transformers' `RobertaModel(add_pooling_layer=False)`.
#[derive(Debug, Clone)]
pub struct RobertaBody {
    embeddings: Embeddings,
    encoder: TransformerStack,
}

impl RobertaBody {
    /// Loads the body under `p`.
    pub fn new(p: &Params, cfg: &BertConfig) -> Result<Self, ModelError> {
        let pad = cfg.pad_token_id.unwrap_or(1);
        Ok(Self {
            embeddings: Embeddings::new(&p.pp("embeddings"), cfg, Positions::AfterPadding(pad))?,
            encoder: TransformerStack::new(&p.pp("encoder"), cfg)?,
        })
    }
}

impl Body for RobertaBody {
    fn forward(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<BodyOutput, ModelError> {
        let emb = self.embeddings.forward(batch, ctx)?;
        let hidden = self.encoder.forward(&emb, &batch.mask_t, ctx)?;
        Ok(BodyOutput {
            hidden,
            pooled: None,
        })
    }
}

/// `RobertaClassificationHead`: first token → dropout → dense → tanh → dropout → out_proj.
#[derive(Debug, Clone)]
pub struct RobertaHead {
    dense: Linear,
    out_proj: Linear,
    dropout: f64,
}

impl RobertaHead {
    /// Loads or creates the head under `p` (names `classifier.dense.*`, `classifier.out_proj.*`).
    pub fn new(p: &Params, cfg: &BertConfig, num_labels: usize) -> Result<Self, ModelError> {
        let c = p.pp("classifier");
        let h = cfg.hidden_size;
        Ok(Self {
            dense: Linear::new(&c.pp("dense"), h, h)?,
            out_proj: Linear::new(&c.pp("out_proj"), h, num_labels)?,
            dropout: cfg.head_dropout(),
        })
    }
}

impl Head for RobertaHead {
    fn forward(&self, out: &BodyOutput, ctx: &ForwardCtx) -> Result<Tensor, ModelError> {
        let first = out.hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let x = self
            .dense
            .forward(&ctx.dropout(&first, self.dropout)?)?
            .tanh()?;
        self.out_proj.forward(&ctx.dropout(&x, self.dropout)?)
    }
}

/// Builds a RoBERTa body from a config.json value.
pub fn body(config: &serde_json::Value, p: &Params) -> Result<Box<dyn Body>, ModelError> {
    Ok(Box::new(RobertaBody::new(
        p,
        &BertConfig::from_json(config)?,
    )?))
}

/// Builds a RoBERTa classification head from a config.json value.
pub fn head(
    config: &serde_json::Value,
    p: &Params,
    num_labels: usize,
) -> Result<Box<dyn Head>, ModelError> {
    Ok(Box::new(RobertaHead::new(
        p,
        &BertConfig::from_json(config)?,
        num_labels,
    )?))
}
