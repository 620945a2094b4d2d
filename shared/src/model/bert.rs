//! BERT (Devlin et al., arXiv:1810.04805) as transformers' `BertModel` + `BertForSequenceClassification`.
//!
//! Covers MiniLM and other BERT-family checkpoints. The embeddings here are shared with RoBERTa,
//! which differs only in how position ids are derived and in its head.

use candle_core::{Tensor, D};

use super::{
    bert_config::BertConfig,
    layers::{Embedding, LayerNorm, Linear},
    transformer::TransformerStack,
    Body, BodyOutput, ForwardCtx, Head, ModelError, Params,
};
use crate::batch::Batch;

/// How position ids are derived from a batch.
#[derive(Debug, Clone, Copy)]
pub enum Positions {
    /// 0, 1, 2, ... for every row (BERT).
    Sequential,
    /// `padding_idx + 1 + k` for the k-th non-pad token and `padding_idx` for pads (RoBERTa).
    AfterPadding(u32),
}

impl Positions {
    /// Computes `[batch, seq]` position ids for `batch`.
    fn ids(self, batch: &Batch) -> Vec<u32> {
        let t = batch.seq_len;
        match self {
            Self::Sequential => (0..batch.batch_size).flat_map(|_| 0..t as u32).collect(),
            Self::AfterPadding(pad) => batch
                .ids
                .chunks(t)
                .flat_map(|row| {
                    let mut count = 0;
                    row.iter()
                        .map(|&id| {
                            if id == pad {
                                pad
                            } else {
                                count += 1;
                                pad + count
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
        }
    }
}

/// Word + position + segment embeddings, LayerNorm and dropout (`embeddings.*`).
#[derive(Debug, Clone)]
pub struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
    positions: Positions,
    max_positions: usize,
    dropout: f64,
}

impl Embeddings {
    /// Loads the embeddings under `p` (the `embeddings` prefix).
    pub fn new(p: &Params, cfg: &BertConfig, positions: Positions) -> Result<Self, ModelError> {
        let h = cfg.hidden_size;
        Ok(Self {
            word: Embedding::new(&p.pp("word_embeddings"), cfg.vocab_size, h)?,
            position: Embedding::new(&p.pp("position_embeddings"), cfg.max_position_embeddings, h)?,
            token_type: Embedding::new(&p.pp("token_type_embeddings"), cfg.type_vocab_size, h)?,
            norm: LayerNorm::new(&p.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            positions,
            max_positions: cfg.max_position_embeddings,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    /// Embeds a batch into `[batch, seq, hidden]`.
    pub fn forward(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<Tensor, ModelError> {
        let pos = self.positions.ids(batch);
        if let Some(&max) = pos.iter().max() {
            if max as usize >= self.max_positions {
                return Err(ModelError::BadInput(format!(
                    "sequence of {} tokens needs position {max}, model has {} positions",
                    batch.seq_len, self.max_positions
                )));
            }
        }
        let pos = Tensor::from_vec(pos, (batch.batch_size, batch.seq_len), batch.device())?;
        let sum = ((self.word.forward(&batch.ids_t)? + self.position.forward(&pos)?)?
            + self.token_type.forward(&batch.type_ids_t)?)?;
        ctx.dropout(&self.norm.forward(&sum)?, self.dropout)
    }
}

/// `pooler.dense` + tanh over the first token.
#[derive(Debug, Clone)]
struct Pooler {
    dense: Linear,
}

impl Pooler {
    fn forward(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        Ok(self.dense.forward(&first)?.tanh()?)
    }
}

/// transformers' `BertModel` (with pooler).
#[derive(Debug, Clone)]
pub struct BertBody {
    embeddings: Embeddings,
    encoder: TransformerStack,
    pooler: Pooler,
}

impl BertBody {
    /// Loads the body; a checkpoint without a pooler gets a fresh fixed-seed one, as transformers does.
    pub fn new(p: &Params, cfg: &BertConfig) -> Result<Self, ModelError> {
        let h = cfg.hidden_size;
        Ok(Self {
            embeddings: Embeddings::new(&p.pp("embeddings"), cfg, Positions::Sequential)?,
            encoder: TransformerStack::new(&p.pp("encoder"), cfg)?,
            pooler: Pooler {
                dense: Linear::new(&p.pp("pooler").pp("dense").optional(), h, h)?,
            },
        })
    }
}

impl Body for BertBody {
    fn forward(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<BodyOutput, ModelError> {
        let emb = self.embeddings.forward(batch, ctx)?;
        let hidden = self.encoder.forward(&emb, &batch.mask_t, ctx)?;
        let pooled = Some(self.pooler.forward(&hidden)?);
        Ok(BodyOutput { hidden, pooled })
    }
}

/// `BertForSequenceClassification`'s head: dropout + `classifier` on the pooled output.
#[derive(Debug, Clone)]
pub struct BertHead {
    classifier: Linear,
    dropout: f64,
}

impl BertHead {
    /// Loads or creates the head under `p` (names `classifier.*`).
    pub fn new(p: &Params, cfg: &BertConfig, num_labels: usize) -> Result<Self, ModelError> {
        Ok(Self {
            classifier: Linear::new(&p.pp("classifier"), cfg.hidden_size, num_labels)?,
            dropout: cfg.head_dropout(),
        })
    }
}

impl Head for BertHead {
    fn forward(&self, out: &BodyOutput, ctx: &ForwardCtx) -> Result<Tensor, ModelError> {
        let pooled = match &out.pooled {
            Some(p) => p.clone(),
            None => out.hidden.narrow(1, 0, 1)?.squeeze(1)?,
        };
        self.classifier
            .forward(&ctx.dropout(&pooled, self.dropout)?)
    }
}

/// Builds a BERT body from a config.json value.
pub fn body(config: &serde_json::Value, p: &Params) -> Result<Box<dyn Body>, ModelError> {
    Ok(Box::new(BertBody::new(p, &BertConfig::from_json(config)?)?))
}

/// Builds a BERT classification head from a config.json value.
pub fn head(
    config: &serde_json::Value,
    p: &Params,
    num_labels: usize,
) -> Result<Box<dyn Head>, ModelError> {
    Ok(Box::new(BertHead::new(
        p,
        &BertConfig::from_json(config)?,
        num_labels,
    )?))
}

/// Mean of the hidden states over real tokens (sentence-transformers' mean pooling), `[batch, hidden]`.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor, ModelError> {
    let m = mask.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    Ok(summed.broadcast_div(&count)?)
}
