//! Errors of checkpoint I/O; each names the file (and tensor) involved.

use std::path::PathBuf;

use crate::model::ModelError;

/// An error reading or writing a Hugging Face model directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The directory lacks a required file.
    #[error("{dir}: no {what} found")]
    MissingFile {
        /// The model directory.
        dir: PathBuf,
        /// What was looked for.
        what: String,
    },
    /// A JSON file is malformed.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// config.json has no usable `model_type`.
    #[error("{path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A weights file is malformed or truncated.
    #[error("{path}: cannot read weights: {source}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// The underlying error.
        source: Box<candle_core::Error>,
    },
    /// Two tensors map to the same canonical name (e.g. `bert.x` and `x`).
    #[error("{path}: tensors `{first}` and `{second}` both map to `{canonical}`")]
    DuplicateTensor {
        /// The weights file.
        path: PathBuf,
        /// First original name.
        first: String,
        /// Second original name.
        second: String,
        /// The shared canonical name.
        canonical: String,
    },
    /// The model could not be built from the checkpoint (missing tensor, wrong shape, bad config).
    #[error("{dir}: {source}")]
    Model {
        /// The model directory.
        dir: PathBuf,
        /// The model error, naming the tensor.
        source: Box<ModelError>,
    },
    /// The output directory already exists and is not empty.
    #[error("{0}: output directory exists and is not empty")]
    OutputExists(PathBuf),
    /// Serialising tensors failed.
    #[error("{path}: cannot write safetensors: {message}")]
    Serialize {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl CheckpointError {
    /// Wraps a weights-file error with its path.
    pub fn weights(path: impl Into<PathBuf>, source: candle_core::Error) -> Self {
        Self::Weights {
            path: path.into(),
            source: Box::new(source),
        }
    }

    /// Wraps a model-building error with its directory.
    pub fn model(dir: impl Into<PathBuf>, source: ModelError) -> Self {
        Self::Model {
            dir: dir.into(),
            source: Box::new(source),
        }
    }

    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
