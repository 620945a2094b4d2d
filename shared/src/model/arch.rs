//! The table of supported architectures: adding one is a new model file plus one entry here.

use super::{bert, deberta, roberta, Body, Head, ModelError, Params};

type BodyFn = fn(&serde_json::Value, &Params) -> Result<Box<dyn Body>, ModelError>;
type HeadFn = fn(&serde_json::Value, &Params, usize) -> Result<Box<dyn Head>, ModelError>;

/// An encoder architecture: how to recognise its checkpoints and build its body and head.
#[derive(Debug)]
pub struct Architecture {
    /// Short name used in logs and manifests.
    pub name: &'static str,
    /// `model_type` values in config.json that select this architecture.
    pub model_types: &'static [&'static str],
    /// Prefix of body tensors in task-model checkpoints (`bert.`, `roberta.`, `deberta.`).
    pub prefix: &'static str,
    /// Prefixes of head tensors in task-model checkpoints (never part of the body).
    pub head_prefixes: &'static [&'static str],
    body: BodyFn,
    head: HeadFn,
}

/// Every supported architecture.
static ARCHITECTURES: &[Architecture] = &[
    Architecture {
        name: "bert",
        model_types: &["bert"],
        prefix: "bert",
        head_prefixes: &["classifier."],
        body: bert::body,
        head: bert::head,
    },
    Architecture {
        name: "roberta",
        model_types: &["roberta", "xlm-roberta", "camembert"],
        prefix: "roberta",
        head_prefixes: &["classifier."],
        body: roberta::body,
        head: roberta::head,
    },
    Architecture {
        name: "deberta-v2",
        model_types: &["deberta-v2"],
        prefix: "deberta",
        // DebertaV2ForSequenceClassification's ContextPooler is part of the task head, not of
        // AutoModel's body: it is created per task and never fused.
        head_prefixes: &["classifier.", "pooler."],
        body: deberta::body,
        head: deberta::head,
    },
];

impl Architecture {
    /// Looks up the architecture for a config.json `model_type`.
    pub fn from_model_type(model_type: &str) -> Result<&'static Self, ModelError> {
        ARCHITECTURES
            .iter()
            .find(|a| a.model_types.contains(&model_type))
            .ok_or_else(|| {
                let known: Vec<_> = ARCHITECTURES
                    .iter()
                    .flat_map(|a| a.model_types.iter())
                    .collect();
                ModelError::UnsupportedConfig(format!(
                    "model_type `{model_type}` (supported: {known:?})"
                ))
            })
    }

    /// All supported architectures.
    pub fn all() -> &'static [Architecture] {
        ARCHITECTURES
    }

    /// Builds the body from config.json, taking its weights from `p`.
    pub fn body(
        &self,
        config: &serde_json::Value,
        p: &Params,
    ) -> Result<Box<dyn Body>, ModelError> {
        (self.body)(config, p)
    }

    /// Builds a classification head with `num_labels` outputs, taking its weights from `p`.
    pub fn head(
        &self,
        config: &serde_json::Value,
        p: &Params,
        num_labels: usize,
    ) -> Result<Box<dyn Head>, ModelError> {
        (self.head)(config, p, num_labels)
    }

    /// Whether a canonical tensor name belongs to a task head rather than the body.
    pub fn is_head_tensor(&self, name: &str) -> bool {
        self.head_prefixes.iter().any(|p| name.starts_with(p))
    }
}
