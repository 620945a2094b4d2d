//! The JSON manifest that travels with every diff file.

use std::collections::BTreeMap;

use super::{DiffError, Encoding};
use crate::{api::keys::valid_contributor_id, hash::is_sha256_hex, tensorfile::Dtype};

/// The manifest format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Bounds on what a manifest may hold: it comes from another organisation, so every free-form field
/// is limited in count and length before anything else looks at it.
pub mod limits {
    /// Most local metrics.
    pub const METRICS: usize = 32;
    /// Longest metric name, architecture or base id.
    pub const NAME_BYTES: usize = 128;
    /// Longest `created_by`.
    pub const TEXT_BYTES: usize = 256;
    /// Most diffed tensors (DeBERTa-v2-xxlarge has ≈ 1,000; a base has far fewer than this).
    pub const TENSORS: usize = 100_000;
    /// Longest tensor name.
    pub const TENSOR_NAME_BYTES: usize = 512;
    /// Most dimensions of a tensor.
    pub const DIMS: usize = 8;
    /// Largest `num_examples` (10¹², so a sum over a million contributions still fits in a u64).
    pub const EXAMPLES: u64 = 1_000_000_000_000;
}

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

    /// Checks every field a contributor controls, without the base or the file: version, encoding,
    /// contributor id, hashes (64 lowercase hex), and the count, length and range of names, metrics,
    /// tensors and numbers (see [`limits`]). The coordinator runs it before anything else touches the
    /// manifest; nothing in a manifest that passes can reach a path or grow without bound.
    pub fn check_fields(&self) -> Result<(), DiffError> {
        let bad = |m: String| Err(DiffError::Manifest(m));
        if self.format_version != FORMAT_VERSION {
            return Err(DiffError::UnsupportedVersion {
                found: self.format_version,
                supported: FORMAT_VERSION,
            });
        }
        self.encoding.validate().map_err(DiffError::Manifest)?;
        if !valid_contributor_id(&self.contributor) {
            return bad(
                "contributor ids are 1-64 characters of [A-Za-z0-9._-], not starting with a dot"
                    .into(),
            );
        }
        if !is_sha256_hex(&self.diff_sha256) || !is_sha256_hex(&self.base.sha256) {
            return bad("sha256 fields must be 64 lowercase hex digits".into());
        }
        let short = |what: &str, v: &str, max: usize| {
            if v.len() > max || v.chars().any(char::is_control) {
                Err(DiffError::Manifest(format!(
                    "{what} must be at most {max} bytes without control characters"
                )))
            } else {
                Ok(())
            }
        };
        short("base.id", &self.base.id, limits::NAME_BYTES)?;
        short("architecture", &self.architecture, limits::NAME_BYTES)?;
        short("created_by", &self.created_by, limits::TEXT_BYTES)?;
        if self.metrics.len() > limits::METRICS {
            return bad(format!("more than {} metrics", limits::METRICS));
        }
        for (k, v) in &self.metrics {
            short("a metric name", k, limits::NAME_BYTES)?;
            if !v.is_finite() {
                return bad(format!("metric `{k}` is {v}"));
            }
        }
        if self.num_examples > limits::EXAMPLES {
            return bad(format!(
                "num_examples {} exceeds {}",
                self.num_examples,
                limits::EXAMPLES
            ));
        }
        if self.tensors.is_empty() {
            return Err(DiffError::Empty);
        }
        if self.tensors.len() > limits::TENSORS {
            return bad(format!("more than {} tensors", limits::TENSORS));
        }
        for t in &self.tensors {
            short("a tensor name", &t.name, limits::TENSOR_NAME_BYTES)?;
            if t.shape.len() > limits::DIMS {
                return bad(format!(
                    "tensor `{}` has more than {} dims",
                    t.name,
                    limits::DIMS
                ));
            }
        }
        if let Some(dp) = &self.dp {
            if !(dp.clip.is_finite() && dp.noise_multiplier.is_finite()) {
                return bad("dp settings must be finite".into());
            }
        }
        Ok(())
    }

    /// The entry for tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }
}
