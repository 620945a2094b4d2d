//! The JSON manifest that travels with every diff file.

use std::collections::BTreeMap;

use super::Encoding;
use crate::tensorfile::Dtype;

/// The manifest format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Which base a diff was computed against.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BaseRef {
    /// Human-readable id of the base (e.g. `iteration-3` or the original model's name).
    pub id: String,
    /// SHA-256 of the base's `model.safetensors`, lowercase hex.
    pub sha256: String,
}

/// One diffed body tensor, described by the base's name, shape and dtype.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorEntry {
    /// Name in the base's weights file.
    pub name: String,
    /// Shape (equal to the base tensor's).
    pub shape: Vec<usize>,
    /// The base tensor's dtype.
    pub dtype: Dtype,
    /// Per-tensor scale (int8 encoding only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f32>,
    /// Values kept (top-k encoding only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<usize>,
}

/// Everything a coordinator needs to validate and fuse one contribution; never any training data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DiffManifest {
    /// Manifest format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The base the diff applies to.
    pub base: BaseRef,
    /// Architecture name (`bert`, `roberta`, ...).
    pub architecture: String,
    /// How values are stored.
    pub encoding: Encoding,
    /// The diffed tensors, in the order they are stored.
    pub tensors: Vec<TensorEntry>,
    /// Number of labelled training examples used.
    pub num_examples: u64,
    /// Local metrics (e.g. `dev_accuracy`), all finite.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Contributor id.
    pub contributor: String,
    /// SHA-256 of the diff file, lowercase hex.
    pub diff_sha256: String,
    /// Size of the diff file in bytes.
    pub diff_bytes: u64,
    /// The coldfuse version that wrote it.
    pub created_by: String,
    /// Differential-privacy settings applied before upload, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<super::DpConfig>,
}

impl DiffManifest {
    /// Parses a manifest from JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Serialises the manifest as pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serialises")
    }

    /// The entry for tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }
}
