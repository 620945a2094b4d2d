//! Hugging Face model directories: `config.json` + weights + tokenizer files, read and written back.
//!
//! Tensors are kept under canonical names (no `bert.`/`roberta.` prefix); the original name and dtype
//! of each are remembered so that a saved directory uses the same names transformers expects.

mod error;
mod names;
mod read;
pub(crate) mod write;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use candle_core::Tensor;

pub use error::CheckpointError;
pub use names::canonical;
pub use read::WeightsSource;
pub use write::{write_safetensors, TOKENIZER_FILES};

use crate::model::Architecture;

/// A loaded Hugging Face model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The directory.
    pub path: PathBuf,
    /// config.json as written, kept verbatim for the round trip.
    pub config: serde_json::Value,
    /// The architecture selected by `model_type`.
    pub arch: &'static Architecture,
    /// Where the weights were read from.
    pub weights: WeightsSource,
    /// Every tensor of the checkpoint by canonical name, in its original dtype, on the CPU.
    pub tensors: Arc<BTreeMap<String, Tensor>>,
    /// Original name of each canonical tensor.
    pub original_names: BTreeMap<String, String>,
    /// Whether body tensors carried the architecture prefix (`bert.`, `roberta.`).
    pub prefixed: bool,
}

impl ModelDir {
    /// Reads `config.json` and all weights of the model directory at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref().to_path_buf();
        if !path.is_dir() {
            return Err(CheckpointError::MissingFile {
                dir: path,
                what: "model directory".into(),
            });
        }
        let config = read_config(&path)?;
        let config_path = path.join("config.json");
        let model_type = config
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| CheckpointError::Config {
                path: config_path.clone(),
                message: "no `model_type` string".into(),
            })?;
        let arch =
            Architecture::from_model_type(model_type).map_err(|e| CheckpointError::Config {
                path: config_path,
                message: e.to_string(),
            })?;
        let weights = WeightsSource::find(&path)?;
        let (tensors, original_names, prefixed) = canonicalise(&weights, arch)?;
        tracing::debug!(dir = %path.display(), arch = arch.name, tensors = tensors.len(), "model dir opened");
        Ok(Self {
            path,
            config,
            arch,
            weights,
            tensors: Arc::new(tensors),
            original_names,
            prefixed,
        })
    }

    /// A label for error messages: the weights file.
    pub fn origin(&self) -> String {
        self.weights.path().display().to_string()
    }

    /// `initializer_range` from the config (transformers' default 0.02).
    pub fn initializer_range(&self) -> f64 {
        self.config
            .get("initializer_range")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.02)
    }

    /// The number of labels a task checkpoint was saved with (`id2label` or `num_labels`). transformers
    /// omits both for the default of 2 labels, so a `*ForSequenceClassification` config without them
    /// has 2.
    pub fn num_labels(&self) -> Option<usize> {
        if let Some(map) = self.config.get("id2label").and_then(|v| v.as_object()) {
            return Some(map.len());
        }
        if let Some(n) = self.config.get("num_labels").and_then(|v| v.as_u64()) {
            return Some(n as usize);
        }
        let architectures = self.config.get("architectures").and_then(|v| v.as_array());
        let classifier = architectures.is_some_and(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .any(|name| name.ends_with("ForSequenceClassification"))
        });
        classifier.then_some(2)
    }

    /// The name a canonical tensor is written under.
    pub fn original_name(&self, canonical: &str) -> String {
        match self.original_names.get(canonical) {
            Some(n) => n.clone(),
            None if self.prefixed && !self.arch.is_head_tensor(canonical) => {
                format!("{}.{canonical}", self.arch.prefix)
            }
            None => canonical.to_string(),
        }
    }
}

fn read_config(dir: &Path) -> Result<serde_json::Value, CheckpointError> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(CheckpointError::MissingFile {
            dir: dir.to_path_buf(),
            what: "config.json".into(),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|e| CheckpointError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|source| CheckpointError::Json { path, source })
}

type Canonical = (BTreeMap<String, Tensor>, BTreeMap<String, String>, bool);

fn canonicalise(
    weights: &WeightsSource,
    arch: &Architecture,
) -> Result<Canonical, CheckpointError> {
    let mut tensors = BTreeMap::new();
    let mut originals: BTreeMap<String, String> = BTreeMap::new();
    let mut prefixed = false;
    for (name, tensor) in weights.read_all()? {
        let (canon, had_prefix) = canonical(&name, arch.prefix);
        prefixed |= had_prefix;
        if let Some(first) = originals.get(&canon) {
            return Err(CheckpointError::DuplicateTensor {
                path: weights.path().to_path_buf(),
                first: first.clone(),
                second: name,
                canonical: canon,
            });
        }
        originals.insert(canon.clone(), name);
        tensors.insert(canon, tensor);
    }
    Ok((tensors, originals, prefixed))
}
