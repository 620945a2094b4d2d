//! Errors of the fine-tuning engine.

use std::path::PathBuf;

use crate::{
    checkpoint::CheckpointError, data::DataError, model::ModelError, tokenize::TokenizeError,
};

/// An error while fine-tuning.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The training configuration is invalid.
    #[error("training config: {0}")]
    Config(String),
    /// The data could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The texts could not be tokenized.
    #[error(transparent)]
    Tokenize(#[from] TokenizeError),
    /// The model could not be built or run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The base model could not be loaded.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The loss or gradient norm stopped being finite.
    #[error("training diverged at step {step}: {what} is {value}")]
    Diverged {
        /// 0-based optimizer step.
        step: usize,
        /// `loss` or `gradient norm`.
        what: &'static str,
        /// The value.
        value: f64,
    },
    /// A run checkpoint could not be written or read.
    #[error("{path}: {message}")]
    RunCheckpoint {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The checkpoint to resume from belongs to another run.
    #[error("{path}: cannot resume: {message}")]
    ResumeMismatch {
        /// The checkpoint directory.
        path: PathBuf,
        /// What differs.
        message: String,
    },
}

impl TrainError {
    /// A run-checkpoint error about `path`.
    pub(crate) fn checkpoint(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Self::RunCheckpoint {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
