//! Errors of lazily read safetensors files; each names the file and, where there is one, the tensor.

use std::path::PathBuf;

/// A safetensors file that cannot be read, or is malformed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TensorFileError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file ends before its header does.
    #[error("{path}: truncated: {len} bytes cannot hold the {needed}-byte header")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The file's size.
        len: u64,
        /// Bytes the header claims (8-byte length prefix included).
        needed: u64,
    },
    /// The header length prefix is implausibly large.
    #[error("{path}: header of {len} bytes exceeds the {limit}-byte limit")]
    HeaderTooLarge {
        /// The file.
        path: PathBuf,
        /// Claimed header length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The header is not a JSON object of tensor entries.
    #[error("{path}: invalid header: {message}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// One tensor entry of the header is malformed.
    #[error("{path}: tensor `{tensor}`: {message}")]
    Entry {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What is wrong.
        message: String,
    },
    /// The tensors do not tile the data section exactly (a gap, an overlap, or bytes left over).
    #[error("{path}: data section of {data_len} bytes is not tiled by the tensors: {message}")]
    Layout {
        /// The file.
        path: PathBuf,
        /// Size of the data section.
        data_len: u64,
        /// Where the tiling breaks.
        message: String,
    },
    /// A tensor the caller asked for is not in the file.
    #[error("{path}: no tensor `{tensor}`")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
    },
    /// A read or write outside a tensor's bytes was requested (a bug in the caller).
    #[error("{path}: tensor `{tensor}`: range {start}..{end} outside its {len} elements")]
    Range {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// First element asked for.
        start: usize,
        /// One past the last element asked for.
        end: usize,
        /// Elements in the tensor.
        len: usize,
    },
}

impl TensorFileError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
