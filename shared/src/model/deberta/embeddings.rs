//! `DebertaV2Embeddings`: word (+ absolute position) (+ segment) embeddings, the optional `embed_proj`,
//! LayerNorm, the padding mask and dropout (`embeddings.*`).

use candle_core::Tensor;

use super::config::DebertaConfig;
use crate::{
    batch::Batch,
    model::{
        layers::{Embedding, LayerNorm, Linear},
        ForwardCtx, ModelError, Params,
    },
};

/// The embedding block of a DeBERTa-v2/v3 body.
#[derive(Debug, Clone)]
pub struct DebertaEmbeddings {
    word: Embedding,
    position: Option<Embedding>,
    token_type: Option<Embedding>,
    proj: Option<Linear>,
    norm: LayerNorm,
    pad_token_id: Option<u32>,
    max_positions: usize,
    type_vocab_size: usize,
    dropout: f64,
}

impl DebertaEmbeddings {
    /// Loads the embeddings under `p` (the `embeddings` prefix).
    pub fn new(p: &Params, cfg: &DebertaConfig) -> Result<Self, ModelError> {
        let (e, h) = (cfg.embedding_size(), cfg.hidden_size);
        let position = if cfg.position_biased_input {
            Some(Embedding::new(
                &p.pp("position_embeddings"),
                cfg.max_position_embeddings,
                e,
            )?)
        } else {
            None
        };
        let token_type = if cfg.type_vocab_size > 0 {
            Some(Embedding::new(
                &p.pp("token_type_embeddings"),
                cfg.type_vocab_size,
                e,
            )?)
        } else {
            None
        };
        let proj = if e != h {
            Some(Linear::no_bias(&p.pp("embed_proj"), e, h)?)
        } else {
            None
        };
        Ok(Self {
            word: Embedding::new(&p.pp("word_embeddings"), cfg.vocab_size, e)?,
            position,
            token_type,
            proj,
            norm: LayerNorm::new(&p.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            pad_token_id: cfg.pad_token_id,
            max_positions: cfg.max_position_embeddings,
            type_vocab_size: cfg.type_vocab_size,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    /// Embeds a batch into `[batch, seq, hidden]`; padded positions are zero before dropout.
    pub fn forward(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<Tensor, ModelError> {
        let (b, t) = (batch.batch_size, batch.seq_len);
        let mut sum = self.words(batch)?;
        if let Some(position) = &self.position {
            if t > self.max_positions {
                return Err(ModelError::BadInput(format!(
                    "sequence of {t} tokens, model has {} absolute positions",
                    self.max_positions
                )));
            }
            let ids = Tensor::arange(0u32, t as u32, batch.device())?.reshape((1, t))?;
            sum = sum.broadcast_add(&position.forward(&ids)?)?;
        }
        if let Some(token_type) = &self.token_type {
            if let Some(&bad) = batch
                .type_ids
                .iter()
                .find(|&&id| id as usize >= self.type_vocab_size)
            {
                return Err(ModelError::BadInput(format!(
                    "token type id {bad}, model has {} types",
                    self.type_vocab_size
                )));
            }
            sum = (sum + token_type.forward(&batch.type_ids_t)?)?;
        }
        if let Some(proj) = &self.proj {
            sum = proj.forward(&sum)?;
        }
        let mask = batch.mask_t.reshape((b, t, 1))?;
        let normed = self.norm.forward(&sum)?.broadcast_mul(&mask)?;
        ctx.dropout(&normed, self.dropout)
    }

    /// Word embeddings; like `nn.Embedding(padding_idx)`, the padding row receives no gradient.
    fn words(&self, batch: &Batch) -> Result<Tensor, ModelError> {
        let out = self.word.forward(&batch.ids_t)?;
        let Some(pad) = self.pad_token_id else {
            return Ok(out);
        };
        // Masked positions are zeroed after the LayerNorm and pass no gradient anyway; only a padding
        // id inside the attended text needs its gradient cut.
        let attended_pad = batch
            .ids
            .iter()
            .zip(&batch.mask)
            .any(|(&id, &m)| id == pad && m != 0);
        if !attended_pad {
            return Ok(out);
        }
        let keep: Vec<f32> = batch
            .ids
            .iter()
            .map(|&id| if id == pad { 0.0 } else { 1.0 })
            .collect();
        let keep = Tensor::from_vec(keep, (batch.batch_size, batch.seq_len, 1), batch.device())?;
        let cut = keep.ones_like()?.sub(&keep)?;
        Ok(out
            .broadcast_mul(&keep)?
            .add(&out.detach().broadcast_mul(&cut)?)?)
    }
}
