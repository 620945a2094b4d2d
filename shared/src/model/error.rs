//! Errors of the model layer.

/// An error while building or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The checkpoint lacks a tensor the architecture needs.
    #[error("{origin}: missing tensor `{name}`")]
    MissingTensor {
        /// Canonical tensor name (without the `bert.`/`roberta.` prefix).
        name: String,
        /// Where the weights came from.
        origin: String,
    },
    /// A tensor has another shape than the config implies.
    #[error("{origin}: tensor `{name}` has shape {found:?}, config implies {expected:?}")]
    ShapeMismatch {
        /// Canonical tensor name.
        name: String,
        /// Where the weights came from.
        origin: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape found in the checkpoint.
        found: Vec<usize>,
    },
    /// config.json names a value this implementation does not support.
    #[error("unsupported config: {0}")]
    UnsupportedConfig(String),
    /// config.json is not valid for this architecture.
    #[error("invalid config.json: {0}")]
    InvalidConfig(#[from] serde_json::Error),
    /// The caller passed inconsistent inputs.
    #[error("bad input: {0}")]
    BadInput(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
