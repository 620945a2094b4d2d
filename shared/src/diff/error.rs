//! Why a diff was refused; each variant is a distinct, named reason.

use std::path::PathBuf;

use crate::{
    api::ErrorCode,
    tensorfile::{Dtype, TensorFileError},
};

/// A diff (or its manifest) that cannot be written, read, or accepted for a base.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiffError {
    /// The diff file is unreadable or malformed as safetensors.
    #[error(transparent)]
    File(#[from] TensorFileError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("manifest: {0}")]
    ManifestJson(#[from] serde_json::Error),
    /// The manifest's format version is not one this build reads.
    #[error("manifest format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Version in the manifest.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// A manifest field is invalid.
    #[error("manifest: {0}")]
    Manifest(String),
    /// The diff was computed against another base.
    #[error("diff is for base {found}, but the current base is {expected}")]
    WrongBase {
        /// SHA-256 of the base being fused.
        expected: String,
        /// SHA-256 the manifest names.
        found: String,
    },
    /// The manifest names another architecture than the base's.
    #[error("diff is for architecture `{found}`, but the base is `{expected}`")]
    WrongArchitecture {
        /// The base's architecture.
        expected: String,
        /// The manifest's architecture.
        found: String,
    },
    /// The diff file's hash or size is not what the manifest says.
    #[error("diff file {what} is {actual}, manifest says {expected}")]
    Integrity {
        /// `sha256` or `size`.
        what: &'static str,
        /// From the manifest.
        expected: String,
        /// Of the file.
        actual: String,
    },
    /// A diff tensor does not exist in the base.
    #[error("tensor `{0}` is not in the base")]
    UnknownTensor(String),
    /// A diff tensor belongs to a task head, which is never shared or fused.
    #[error("tensor `{0}` belongs to a task head; heads are never part of a diff")]
    HeadTensor(String),
    /// A base tensor cannot be diffed (not a float weight).
    #[error("tensor `{name}` has dtype {dtype} in the base; only F32/F16/BF16 weights are diffed")]
    NotFloat {
        /// The tensor.
        name: String,
        /// Its dtype in the base.
        dtype: Dtype,
    },
    /// Shapes differ between the diff and the base.
    #[error("tensor `{name}`: shape {found:?} does not match the base's {expected:?}")]
    ShapeMismatch {
        /// The tensor.
        name: String,
        /// The base's shape.
        expected: Vec<usize>,
        /// The diff's shape.
        found: Vec<usize>,
    },
    /// The manifest and the file list different tensors, or a part has the wrong dtype/shape.
    #[error("tensor `{name}`: {message}")]
    Layout {
        /// The tensor (or part).
        name: String,
        /// What does not match.
        message: String,
    },
    /// A value is NaN or infinite.
    #[error("tensor `{name}`: non-finite value {value} at element {index}")]
    NonFinite {
        /// The tensor.
        name: String,
        /// Flat element index.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Top-k indices are not strictly ascending or out of range.
    #[error("tensor `{name}`: bad sparse index {value} at position {position}")]
    BadIndex {
        /// The tensor.
        name: String,
        /// Position in the index list.
        position: usize,
        /// The index found.
        value: u32,
    },
    /// The diff holds no tensors.
    #[error("diff holds no tensors")]
    Empty,
    /// The diff's L2 norm is beyond the deployment's bound (a poisoning defence).
    #[error(
        "diff L2 norm {norm:.6e} exceeds this deployment's bound {bound:.6e} \
         ({ratio} × the base body's norm)"
    )]
    NormBound {
        /// The diff's L2 norm.
        norm: f64,
        /// The bound.
        bound: f64,
        /// The bound as a fraction of the base's norm.
        ratio: f64,
    },
}

impl DiffError {
    /// Whether the fault is the machine's (an I/O error reading local files), not the diff's.
    pub fn is_local_io(&self) -> bool {
        matches!(
            self,
            Self::Io { .. } | Self::File(crate::tensorfile::TensorFileError::Io { .. })
        )
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A short machine-readable reason (for rejection records and metrics).
    pub fn reason(&self) -> &'static str {
        self.code().as_str()
    }

    /// The API error code a rejection for this reason carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::File(_) => ErrorCode::MalformedFile,
            Self::Io { .. } => ErrorCode::Io,
            Self::ManifestJson(_) | Self::Manifest(_) => ErrorCode::BadManifest,
            Self::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            Self::WrongBase { .. } => ErrorCode::WrongBase,
            Self::WrongArchitecture { .. } => ErrorCode::WrongArchitecture,
            Self::Integrity { .. } => ErrorCode::Integrity,
            Self::UnknownTensor(_) => ErrorCode::UnknownTensor,
            Self::HeadTensor(_) => ErrorCode::HeadTensor,
            Self::NotFloat { .. } => ErrorCode::NotFloat,
            Self::ShapeMismatch { .. } => ErrorCode::ShapeMismatch,
            Self::Layout { .. } => ErrorCode::Layout,
            Self::NonFinite { .. } => ErrorCode::NonFinite,
            Self::BadIndex { .. } => ErrorCode::BadIndex,
            Self::Empty => ErrorCode::Empty,
            Self::NormBound { .. } => ErrorCode::NormBound,
        }
    }
}
