//! Safetensors files read lazily and written in a stream.
//!
//! `safetensors::SafeTensors` needs the whole file in memory; diffs and fused bases are read tensor by
//! tensor (and chunk by chunk) with positional reads instead. The header is parsed here, checked
//! against the file size (every tensor inside the data section, sizes matching dtype × shape, no gaps
//! or overlaps), and then any byte range of a tensor can be read without touching the rest.

mod compare;
mod dtype;
mod error;
mod header;
mod reader;
mod source;
mod writer;

pub use compare::{first_difference, TensorDifference};
pub use dtype::Dtype;
pub use error::TensorFileError;
pub use header::{Header, TensorInfo, MAX_HEADER_BYTES};
pub use reader::TensorFile;
pub use source::{ByteSource, LocalFile};
pub use writer::{TensorFileWriter, TensorSpec};
