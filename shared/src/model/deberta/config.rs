//! DeBERTa-v2/v3's config.json, mirroring transformers' `DebertaV2Config` and the `getattr` defaults of
//! `modeling_deberta_v2.py`. Values we do not compute exactly as transformers does are rejected by
//! [`DebertaConfig::validate`], never approximated.

use serde::Deserialize;

use crate::model::{layers::Activation, ModelError};

/// `pos_att_type` as written in config.json: a `|`-separated string (`"p2c|c2p"`) or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PosAttTypeField {
    /// `"p2c|c2p"`.
    Text(String),
    /// `["p2c", "c2p"]`.
    List(Vec<String>),
}

/// Hyper-parameters of a DeBERTa-v2/v3 encoder, read from an HF `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DebertaConfig {
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
    #[serde(default = "d_gelu")]
    pub hidden_act: String,
    /// Dropout on hidden states (also on the relative embeddings).
    #[serde(default = "d_drop")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    #[serde(default = "d_drop")]
    pub attention_probs_dropout_prob: f64,
    /// Number of learned absolute positions.
    #[serde(default = "d_pos")]
    pub max_position_embeddings: usize,
    /// Number of segment types; 0 means no segment embeddings (DeBERTa-v3).
    #[serde(default)]
    pub type_vocab_size: usize,
    /// Std of the normal init for fresh weights.
    #[serde(default = "d_init")]
    pub initializer_range: f64,
    /// LayerNorm epsilon.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// Whether attention has the disentangled relative-position terms.
    #[serde(default)]
    pub relative_attention: bool,
    /// Relative distance range; below 1 means `max_position_embeddings`.
    #[serde(default = "d_minus_one")]
    pub max_relative_positions: i64,
    /// Number of log buckets for relative positions; below 1 means no bucketing.
    #[serde(default = "d_minus_one")]
    pub position_buckets: i64,
    /// Padding token id: its word-embedding row gets no gradient (`nn.Embedding(padding_idx)`).
    #[serde(default = "d_pad")]
    pub pad_token_id: Option<u32>,
    /// Whether absolute position embeddings are added to the input (false in DeBERTa-v3).
    #[serde(default = "d_true")]
    pub position_biased_input: bool,
    /// Which relative terms are computed: `c2p` (content→position), `p2c` (position→content).
    #[serde(default)]
    pub pos_att_type: Option<PosAttTypeField>,
    /// Whether the relative terms reuse the content query/key projections.
    #[serde(default)]
    pub share_att_key: bool,
    /// Normalisation of the shared relative embeddings: `none` or `layer_norm`.
    #[serde(default = "d_none")]
    pub norm_rel_ebd: String,
    /// Width of the token embeddings; projected to `hidden_size` (`embed_proj`) when different.
    #[serde(default)]
    pub embedding_size: Option<usize>,
    /// Per-head width; must be `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub attention_head_size: Option<usize>,
    /// Kernel of the convolution after the first layer; 0 means none.
    #[serde(default)]
    pub conv_kernel_size: usize,
    /// Groups of that convolution.
    #[serde(default = "d_one")]
    pub conv_groups: usize,
    /// Activation of that convolution.
    #[serde(default = "d_tanh")]
    pub conv_act: String,
    /// Width of the classification pooler; must be `hidden_size`.
    #[serde(default)]
    pub pooler_hidden_size: Option<usize>,
    /// Dropout before the pooler's dense layer.
    #[serde(default)]
    pub pooler_dropout: f64,
    /// Activation of the pooler.
    #[serde(default = "d_gelu")]
    pub pooler_hidden_act: String,
    /// Dropout before the classifier; `None` means `hidden_dropout_prob`.
    #[serde(default)]
    pub cls_dropout: Option<f64>,
}

fn d_vocab() -> usize {
    128100
}
fn d_hidden() -> usize {
    1536
}
fn d_layers() -> usize {
    24
}
fn d_heads() -> usize {
    24
}
fn d_inter() -> usize {
    6144
}
fn d_gelu() -> String {
    "gelu".into()
}
fn d_tanh() -> String {
    "tanh".into()
}
fn d_none() -> String {
    "none".into()
}
fn d_drop() -> f64 {
    0.1
}
fn d_pos() -> usize {
    512
}
fn d_init() -> f64 {
    0.02
}
fn d_eps() -> f64 {
    1e-7
}
fn d_minus_one() -> i64 {
    -1
}
fn d_pad() -> Option<u32> {
    Some(0)
}
fn d_true() -> bool {
    true
}
fn d_one() -> usize {
    1
}

/// The relative terms of disentangled attention (`pos_att_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PosAttType {
    /// Content-to-position (`c2p`): queries against relative position keys.
    pub c2p: bool,
    /// Position-to-content (`p2c`): keys against relative position queries.
    pub p2c: bool,
}

impl PosAttType {
    /// `1 + [c2p] + [p2c]`: scores are divided by `sqrt(head_dim * scale_factor)`.
    pub fn scale_factor(self) -> usize {
        1 + usize::from(self.c2p) + usize::from(self.p2c)
    }
}

/// How relative positions map onto rows of the relative embedding table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelativeSpec {
    /// Half the number of relative embedding rows (`pos_ebd_size`); indices are clamped to `2 * span`.
    pub span: usize,
    /// `(position_buckets, max_relative_positions)` when distances are log-bucketed.
    pub buckets: Option<(i64, i64)>,
}

impl DebertaConfig {
    /// Parses and validates a config.json value.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, ModelError> {
        let cfg: Self = serde_json::from_value(value.clone())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects options that would make us compute something other than transformers does.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::UnsupportedConfig(m));
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if let Some(size) = self.attention_head_size {
            if size != self.head_dim() {
                return bad(format!(
                    "attention_head_size {size} (only hidden_size / num_attention_heads = {} is \
                     implemented)",
                    self.head_dim()
                ));
            }
        }
        if let Some(size) = self.pooler_hidden_size {
            if size != self.hidden_size {
                return bad(format!(
                    "pooler_hidden_size {size} differs from hidden_size {}",
                    self.hidden_size
                ));
            }
        }
        if self.embedding_size == Some(0) || self.vocab_size == 0 {
            return bad("embedding_size and vocab_size must be positive".into());
        }
        Activation::parse(&self.hidden_act)?;
        Activation::parse(&self.pooler_hidden_act)?;
        self.pos_att_type()?;
        self.norm_rel_layer_norm()?;
        if self.conv_kernel_size > 0 {
            Activation::parse(&self.conv_act)?;
            if self.conv_kernel_size.is_multiple_of(2) {
                return bad(format!(
                    "conv_kernel_size {} (transformers pads (k-1)/2 per side, so only odd kernels \
                     keep the sequence length)",
                    self.conv_kernel_size
                ));
            }
            if self.conv_groups == 0 || !self.hidden_size.is_multiple_of(self.conv_groups) {
                return bad(format!(
                    "conv_groups {} does not divide hidden_size {}",
                    self.conv_groups, self.hidden_size
                ));
            }
        }
        if let Some((buckets, max)) = self.relative().and_then(|r| r.buckets) {
            if buckets < 2 || max - 1 <= buckets / 2 {
                return bad(format!(
                    "position_buckets {buckets} with max_relative_positions {max}: log bucketing \
                     needs at least 2 buckets and max_relative_positions > position_buckets / 2 + 1"
                ));
            }
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
            ("pooler_dropout", self.pooler_dropout),
            ("cls_dropout", self.cls_dropout.unwrap_or(0.0)),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} {p} is not in [0, 1)"));
            }
        }
        Ok(())
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Width of the token embeddings before `embed_proj`.
    pub fn embedding_size(&self) -> usize {
        self.embedding_size.unwrap_or(self.hidden_size)
    }

    /// The parsed `pos_att_type`; unknown terms (such as DeBERTa-v1's `p2p`) are an error.
    pub fn pos_att_type(&self) -> Result<PosAttType, ModelError> {
        let items: Vec<String> = match &self.pos_att_type {
            None => Vec::new(),
            Some(PosAttTypeField::Text(s)) => s.split('|').map(str::to_string).collect(),
            Some(PosAttTypeField::List(l)) => l.clone(),
        };
        let mut out = PosAttType::default();
        for item in items {
            match item.trim().to_lowercase().as_str() {
                "c2p" => out.c2p = true,
                "p2c" => out.p2c = true,
                other => {
                    return Err(ModelError::UnsupportedConfig(format!(
                        "pos_att_type entry `{other}` (only `c2p` and `p2c` are implemented)"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Whether the relative embeddings go through `encoder.LayerNorm` (`norm_rel_ebd`).
    pub fn norm_rel_layer_norm(&self) -> Result<bool, ModelError> {
        let mut layer_norm = false;
        for item in self.norm_rel_ebd.to_lowercase().split('|') {
            match item.trim() {
                "none" => {}
                "layer_norm" => layer_norm = true,
                other => {
                    return Err(ModelError::UnsupportedConfig(format!(
                    "norm_rel_ebd entry `{other}` (only `none` and `layer_norm` are implemented)"
                )))
                }
            }
        }
        Ok(layer_norm)
    }

    /// The relative-position layout, or `None` without `relative_attention`.
    pub fn relative(&self) -> Option<RelativeSpec> {
        if !self.relative_attention {
            return None;
        }
        let max = if self.max_relative_positions < 1 {
            self.max_position_embeddings as i64
        } else {
            self.max_relative_positions
        };
        Some(if self.position_buckets > 0 {
            RelativeSpec {
                span: self.position_buckets as usize,
                buckets: Some((self.position_buckets, max)),
            }
        } else {
            RelativeSpec {
                span: max as usize,
                buckets: None,
            }
        })
    }

    /// Dropout used before the classifier.
    pub fn head_dropout(&self) -> f64 {
        self.cls_dropout.unwrap_or(self.hidden_dropout_prob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: serde_json::Value) -> Result<DebertaConfig, ModelError> {
        let mut v = serde_json::json!({
            "model_type": "deberta-v2", "hidden_size": 32, "num_attention_heads": 4,
            "relative_attention": true, "position_buckets": 256, "max_relative_positions": -1,
        });
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        DebertaConfig::from_json(&v)
    }

    #[test]
    fn deberta_pos_att_type_as_string_or_list() {
        let a = parse(serde_json::json!({"pos_att_type": "p2c|c2p"})).unwrap();
        let b = parse(serde_json::json!({"pos_att_type": ["c2p"]})).unwrap();
        let both = PosAttType {
            c2p: true,
            p2c: true,
        };
        assert_eq!(a.pos_att_type().unwrap(), both);
        assert_eq!(b.pos_att_type().unwrap().scale_factor(), 2);
        let c = parse(serde_json::json!({"pos_att_type": null})).unwrap();
        assert_eq!(c.pos_att_type().unwrap().scale_factor(), 1);
    }

    #[test]
    fn deberta_relative_spec_follows_transformers_defaults() {
        let v3 = parse(serde_json::json!({})).unwrap();
        assert_eq!(
            v3.relative(),
            Some(RelativeSpec {
                span: 256,
                buckets: Some((256, 512))
            })
        );
        let plain =
            parse(serde_json::json!({"position_buckets": -1, "max_relative_positions": 16}))
                .unwrap();
        assert_eq!(plain.relative().unwrap().span, 16);
        let off = parse(serde_json::json!({"relative_attention": false})).unwrap();
        assert_eq!(off.relative(), None);
    }

    /// The published microsoft/deberta-v3-base and deberta-v2-xlarge configs (shape-defining keys).
    #[test]
    fn deberta_published_configs_parse() {
        let v3_base = serde_json::json!({
            "model_type": "deberta-v2", "hidden_size": 768, "num_attention_heads": 12,
            "num_hidden_layers": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
            "relative_attention": true, "position_buckets": 256, "norm_rel_ebd": "layer_norm",
            "share_att_key": true, "pos_att_type": "p2c|c2p", "layer_norm_eps": 1e-7,
            "max_relative_positions": -1, "position_biased_input": false, "type_vocab_size": 0,
            "vocab_size": 128100, "hidden_act": "gelu",
        });
        let cfg = DebertaConfig::from_json(&v3_base).unwrap();
        assert_eq!(cfg.pos_att_type().unwrap().scale_factor(), 3);
        assert!(cfg.norm_rel_layer_norm().unwrap());
        assert_eq!(cfg.relative().unwrap().buckets, Some((256, 512)));
        assert_eq!(cfg.embedding_size(), 768);

        let mut v2_xlarge = v3_base;
        for (k, v) in [
            ("hidden_size", serde_json::json!(1536)),
            ("num_attention_heads", serde_json::json!(24)),
            ("attention_head_size", serde_json::json!(64)),
            ("conv_kernel_size", serde_json::json!(3)),
            ("conv_act", serde_json::json!("gelu")),
        ] {
            v2_xlarge[k] = v;
        }
        let cfg = DebertaConfig::from_json(&v2_xlarge).unwrap();
        assert_eq!((cfg.head_dim(), cfg.conv_groups), (64, 1));
    }

    #[test]
    fn deberta_unsupported_options_are_rejected() {
        for (extra, needle) in [
            (serde_json::json!({"pos_att_type": "p2c|p2p"}), "p2p"),
            (serde_json::json!({"norm_rel_ebd": "rms_norm"}), "rms_norm"),
            (
                serde_json::json!({"attention_head_size": 4}),
                "attention_head_size",
            ),
            (
                serde_json::json!({"pooler_hidden_size": 16}),
                "pooler_hidden_size",
            ),
            (
                serde_json::json!({"conv_kernel_size": 2}),
                "conv_kernel_size",
            ),
            (
                serde_json::json!({"conv_kernel_size": 3, "conv_groups": 3}),
                "conv_groups",
            ),
            (
                serde_json::json!({"conv_kernel_size": 3, "conv_act": "swishy"}),
                "swishy",
            ),
            (serde_json::json!({"hidden_act": "mish"}), "mish"),
            (
                serde_json::json!({"position_buckets": 256, "max_relative_positions": 100}),
                "position_buckets",
            ),
            (
                serde_json::json!({"num_attention_heads": 5}),
                "num_attention_heads",
            ),
        ] {
            let err = parse(extra.clone())
                .expect_err(&extra.to_string())
                .to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
    }
}
