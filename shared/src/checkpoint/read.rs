//! Reading weights files: `model.safetensors`, sharded safetensors, and legacy `pytorch_model.bin`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use candle_core::{Device, Tensor};

use super::CheckpointError;

/// Weight file names in the order they are preferred.
const SAFETENSORS: &str = "model.safetensors";
const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
const PYTORCH_BIN: &str = "pytorch_model.bin";

/// Where a model directory keeps its weights.
#[derive(Debug, Clone)]
pub enum WeightsSource {
    /// One safetensors file.
    Safetensors(PathBuf),
    /// A safetensors index and its shard files.
    Sharded(PathBuf, Vec<PathBuf>),
    /// A PyTorch pickle (zip) file.
    PytorchBin(PathBuf),
}

impl WeightsSource {
    /// Finds the weights in `dir`, preferring safetensors.
    pub fn find(dir: &Path) -> Result<Self, CheckpointError> {
        let single = dir.join(SAFETENSORS);
        if single.is_file() {
            return Ok(Self::Safetensors(single));
        }
        let index = dir.join(SAFETENSORS_INDEX);
        if index.is_file() {
            return Ok(Self::Sharded(index.clone(), shard_files(dir, &index)?));
        }
        let bin = dir.join(PYTORCH_BIN);
        if bin.is_file() {
            return Ok(Self::PytorchBin(bin));
        }
        Err(CheckpointError::MissingFile {
            dir: dir.to_path_buf(),
            what: format!("weights ({SAFETENSORS}, {SAFETENSORS_INDEX} or {PYTORCH_BIN})"),
        })
    }

    /// The file named in messages.
    pub fn path(&self) -> &Path {
        match self {
            Self::Safetensors(p) | Self::Sharded(p, _) | Self::PytorchBin(p) => p,
        }
    }

    /// Reads every tensor (original names, original dtypes) onto the CPU.
    pub fn read_all(&self) -> Result<Vec<(String, Tensor)>, CheckpointError> {
        match self {
            Self::Safetensors(p) => read_safetensors(p),
            Self::Sharded(_, shards) => {
                let mut all = Vec::new();
                for shard in shards {
                    all.extend(read_safetensors(shard)?);
                }
                Ok(all)
            }
            Self::PytorchBin(p) => candle_core::pickle::read_all(p)
                .map_err(|source| CheckpointError::weights(p, source)),
        }
    }
}

fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    let map = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|source| CheckpointError::weights(path, source))?;
    let sorted: BTreeMap<_, _> = map.into_iter().collect();
    Ok(sorted.into_iter().collect())
}

fn shard_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let text = std::fs::read_to_string(index).map_err(|e| CheckpointError::io(index, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| CheckpointError::Json {
            path: index.to_path_buf(),
            source,
        })?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| CheckpointError::Config {
            path: index.to_path_buf(),
            message: "no `weight_map` object".into(),
        })?;
    let mut files: Vec<PathBuf> = Vec::new();
    for file in map.values().filter_map(|v| v.as_str()) {
        let path = dir.join(file);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
