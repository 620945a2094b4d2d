//! Why a fusion could not run; nothing is published when it fails.

use crate::{diff::DiffError, tensorfile::TensorFileError};

/// A fusion that cannot run or cannot complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FusionError {
    /// A contribution is invalid for this base.
    #[error("contribution {contributor} ({sha256}): {source}")]
    Diff {
        /// Contributor id.
        contributor: String,
        /// Diff hash.
        sha256: String,
        /// The reason.
        source: Box<DiffError>,
    },
    /// Reading the base or writing the result failed.
    #[error(transparent)]
    File(#[from] TensorFileError),
    /// Copying the base's other files failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The strategy or its parameters are invalid.
    #[error("fusion config: {0}")]
    Config(String),
    /// Too few contributions for the strategy.
    #[error("strategy `{strategy}` needs at least {needed} contributions, got {got}")]
    TooFew {
        /// Strategy name.
        strategy: String,
        /// Minimum.
        needed: usize,
        /// Given.
        got: usize,
    },
    /// The fused result has a NaN or infinite value (e.g. an overflow in a 16-bit base).
    #[error("fused tensor `{tensor}` has non-finite value at element {index}")]
    NonFinite {
        /// The tensor.
        tensor: String,
        /// Flat element index.
        index: usize,
    },
    /// The output directory exists and is not empty.
    #[error("{0}: output exists and is not empty")]
    OutputExists(std::path::PathBuf),
}

impl FusionError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
