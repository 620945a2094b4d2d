//! The config.json fields shared by BERT-style encoders (BERT, RoBERTa, DistilRoBERTa, MiniLM).
//!
//! Mirrors transformers' `BertConfig`/`RobertaConfig`; options that would change the computation and
//! that we do not implement are rejected by [`BertConfig::validate`].

use serde::Deserialize;

use super::{layers::Activation, ModelError};

/// Hyper-parameters of a BERT-style encoder, read from an HF `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Size of the token vocabulary.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Width of the hidden states.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Number of transformer layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Number of attention heads per layer.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    /// Feed-forward activation name.
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// Dropout on hidden states.
    #[serde(default = "d_drop")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    #[serde(default = "d_drop")]
    pub attention_probs_dropout_prob: f64,
    /// Number of learned absolute positions.
    #[serde(default = "d_pos")]
    pub max_position_embeddings: usize,
    /// Number of segment types.
    #[serde(default = "d_types")]
    pub type_vocab_size: usize,
    /// Std of the normal init for fresh weights.
    #[serde(default = "d_init")]
    pub initializer_range: f64,
    /// LayerNorm epsilon.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id (RoBERTa's `padding_idx`).
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Dropout in the classification head; `None` means `hidden_dropout_prob`.
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    /// Position embedding kind; only `absolute` is supported.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    /// Decoder mode; not supported.
    #[serde(default)]
    pub is_decoder: bool,
    /// Cross attention; not supported.
    #[serde(default)]
    pub add_cross_attention: bool,
}

fn d_vocab() -> usize {
    30522
}
fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_inter() -> usize {
    3072
}
fn d_act() -> String {
    "gelu".into()
}
fn d_drop() -> f64 {
    0.1
}
fn d_pos() -> usize {
    512
}
fn d_types() -> usize {
    2
}
fn d_init() -> f64 {
    0.02
}
fn d_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Parses and validates a config.json value.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, ModelError> {
        let cfg: Self = serde_json::from_value(value.clone())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects options that would make us compute something other than transformers does.
    pub fn validate(&self) -> Result<(), ModelError> {
        if let Some(kind) = &self.position_embedding_type {
            if kind != "absolute" {
                return Err(ModelError::UnsupportedConfig(format!(
                    "position_embedding_type `{kind}` (only `absolute` is implemented)"
                )));
            }
        }
        if self.is_decoder || self.add_cross_attention {
            return Err(ModelError::UnsupportedConfig(
                "decoder / cross-attention encoders are not supported".into(),
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(ModelError::UnsupportedConfig(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        Activation::parse(&self.hidden_act)?;
        Ok(())
    }

    /// Dropout used by the classification head.
    pub fn head_dropout(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }
}
