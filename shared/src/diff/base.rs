//! The base a diff is checked against: its weights file header, hash and architecture.

use std::path::{Path, PathBuf};

use crate::{
    checkpoint::canonical,
    hash::sha256_file,
    model::Architecture,
    tensorfile::{TensorFile, TensorInfo},
};

use super::DiffError;

/// File name of a base's weights (coordinator-published bases always have exactly this one file).
pub const BASE_WEIGHTS: &str = "model.safetensors";

/// A base model dir opened lazily: header, SHA-256 and architecture, no tensor data in memory.
#[derive(Debug)]
pub struct BaseInfo {
    /// The model directory.
    pub dir: PathBuf,
    /// SHA-256 of `model.safetensors`, lowercase hex.
    pub sha256: String,
    /// The architecture from config.json's `model_type`.
    pub architecture: &'static Architecture,
    /// The open weights file.
    pub file: TensorFile,
}

impl BaseInfo {
    /// Opens the base at `dir` and hashes its weights file.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, DiffError> {
        let weights = dir.as_ref().join(BASE_WEIGHTS);
        let sha256 = sha256_file(&weights).map_err(|e| DiffError::io(&weights, e))?;
        Self::open_with_sha256(dir, sha256)
    }

    /// Opens the base at `dir` whose weights hash is already known (e.g. from its published manifest).
    pub fn open_with_sha256(dir: impl AsRef<Path>, sha256: String) -> Result<Self, DiffError> {
        let dir = dir.as_ref().to_path_buf();
        let config = dir.join("config.json");
        let text = std::fs::read(&config).map_err(|e| DiffError::io(&config, e))?;
        let value: serde_json::Value = serde_json::from_slice(&text)?;
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                DiffError::Manifest(format!("{}: no `model_type` string", config.display()))
            })?;
        let architecture = Architecture::from_model_type(model_type)
            .map_err(|e| DiffError::Manifest(format!("{}: {e}", config.display())))?;
        let file = TensorFile::open(dir.join(BASE_WEIGHTS))?;
        Ok(Self {
            dir,
            sha256,
            architecture,
            file,
        })
    }

    /// The base tensor called `name` (its name in the weights file).
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.file.header.get(name)
    }

    /// Global L2 norm (summed in f64) of every tensor a diff may change: float weights that are not
    /// part of a task head. The scale a diff's norm is bounded against.
    pub fn body_l2_norm(&self) -> Result<f64, DiffError> {
        const CHUNK: usize = 1 << 16;
        let (mut buf, mut halves, mut sum_sq) = (vec![0f32; CHUNK], Vec::new(), 0f64);
        for t in &self.file.header.tensors {
            if !t.dtype.is_weight_float() || self.is_head(&t.name) {
                continue;
            }
            let mut start = 0;
            while start < t.numel() {
                let out = &mut buf[..CHUNK.min(t.numel() - start)];
                self.file.read_f32(t, start, out, &mut halves)?;
                sum_sq += out.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
                start += out.len();
            }
        }
        Ok(sum_sq.sqrt())
    }

    /// Whether the weights-file tensor `name` belongs to a task head.
    pub fn is_head(&self, name: &str) -> bool {
        let (canon, _) = canonical(name, self.architecture.prefix);
        self.architecture.is_head_tensor(&canon)
    }
}
