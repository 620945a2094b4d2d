//! The contribution format: a body diff (fine-tuned − base) in safetensors plus a JSON manifest.
//!
//! Diff tensors carry the base's own tensor names; heads are never part of a diff. Values are stored
//! as f32, bf16 (default), f16, int8 with a per-tensor scale, or top-k sparse (see [`Encoding`]).
//! [`validate`] is the gate a coordinator runs before accepting a diff: manifest fields, base hash,
//! architecture, file hash and size, layout, names/shapes against the base, and every value finite.

mod base;
mod builder;
mod codec;
mod encoding;
mod error;
mod manifest;
pub mod privacy;
mod reader;
mod stream;

pub use base::{BaseInfo, BASE_WEIGHTS};
pub use builder::{
    body_deltas, ContributionInfo, DiffBuilder, TensorDelta, DIFF_FILE, MANIFEST_FILE,
};
pub use codec::{encode, Encoded, Part, INDICES_SUFFIX, VALUES_SUFFIX};
pub use encoding::Encoding;
pub use error::DiffError;
pub use manifest::{BaseRef, DiffManifest, TensorEntry, FORMAT_VERSION};
pub use privacy::{privatize, DpConfig, DpReport};
pub use reader::{check_announced, validate, DiffReader, DiffStats, DiffTensor, Scratch};
pub use stream::{Progress, StreamCheck, StreamState};
