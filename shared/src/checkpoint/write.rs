//! Writing a model directory that `transformers.AutoModel.from_pretrained` loads unchanged.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use candle_core::{Tensor, Var};

use super::{CheckpointError, ModelDir};

/// Tokenizer and vocabulary files copied along with the weights.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spm.model",
    "sentencepiece.bpe.model",
];

impl ModelDir {
    /// Writes `body` (current values, by canonical name) plus every non-head tensor of the original
    /// checkpoint that the body does not replace, with original names and dtypes, to a new directory
    /// `out`. The directory is assembled beside `out` and renamed into place, so `out` never holds a
    /// partial model.
    pub fn save_with_body(
        &self,
        out: &Path,
        body: &BTreeMap<String, Var>,
    ) -> Result<(), CheckpointError> {
        let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
        for (canon, var) in body {
            let dtype = self
                .tensors
                .get(canon)
                .map(|t| t.dtype())
                .unwrap_or(var.dtype());
            let value = var
                .as_tensor()
                .to_dtype(dtype)
                .and_then(|t| t.to_device(&candle_core::Device::Cpu));
            let value = value.map_err(|source| CheckpointError::weights(out, source))?;
            tensors.insert(self.original_name(canon), value);
        }
        for (canon, tensor) in self.tensors.iter() {
            if !body.contains_key(canon) && !self.arch.is_head_tensor(canon) {
                tensors.insert(self.original_name(canon), tensor.clone());
            }
        }
        self.write_dir(out, &tensors)
    }

    fn write_dir(
        &self,
        out: &Path,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<(), CheckpointError> {
        prepare_target(out)?;
        let staging = staging_path(out);
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(|e| CheckpointError::io(&staging, e))?;
        }
        fs::create_dir_all(&staging).map_err(|e| CheckpointError::io(&staging, e))?;
        let config =
            serde_json::to_vec_pretty(&self.config).map_err(|source| CheckpointError::Json {
                path: staging.join("config.json"),
                source,
            })?;
        write_synced(&staging.join("config.json"), &config)?;
        write_safetensors(&staging.join("model.safetensors"), tensors)?;
        for name in TOKENIZER_FILES {
            let src = self.path.join(name);
            if src.is_file() {
                let dst = staging.join(name);
                fs::copy(&src, &dst).map_err(|e| CheckpointError::io(&dst, e))?;
            }
        }
        fs::rename(&staging, out).map_err(|e| CheckpointError::io(out, e))?;
        Ok(())
    }
}

/// `out` must be absent or an empty directory (which is removed so the rename can take its place).
pub(crate) fn prepare_target(out: &Path) -> Result<(), CheckpointError> {
    if !out.exists() {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| CheckpointError::io(parent, e))?;
        }
        return Ok(());
    }
    let mut entries = fs::read_dir(out).map_err(|e| CheckpointError::io(out, e))?;
    if entries.next().is_some() {
        return Err(CheckpointError::OutputExists(out.to_path_buf()));
    }
    fs::remove_dir(out).map_err(|e| CheckpointError::io(out, e))
}

pub(crate) fn staging_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut f = fs::File::create(path).map_err(|e| CheckpointError::io(path, e))?;
    f.write_all(bytes)
        .map_err(|e| CheckpointError::io(path, e))?;
    f.sync_all().map_err(|e| CheckpointError::io(path, e))
}

/// Writes tensors to a safetensors file with transformers' `{"format": "pt"}` metadata.
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<(), CheckpointError> {
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes = safetensors::tensor::serialize(tensors.iter(), Some(metadata)).map_err(|e| {
        CheckpointError::Serialize {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    write_synced(path, &bytes)
}
