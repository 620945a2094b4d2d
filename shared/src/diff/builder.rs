//! Writing a diff: encode each body tensor's (fine-tuned − base) values, then the file and manifest.

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
};

use candle_core::{DType, Var};

use super::{
    encode,
    privacy::{privatize, DpConfig, DpReport},
    BaseRef, DiffError, DiffManifest, Encoding, TensorEntry, FORMAT_VERSION,
};
use crate::{
    checkpoint::ModelDir,
    hash::sha256_file,
    tensorfile::{Dtype, TensorFileWriter, TensorSpec},
};

/// File name of the diff inside a contribution directory.
pub const DIFF_FILE: &str = "diff.safetensors";
/// File name of the manifest inside a contribution directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Who contributed, with how much data, and how well it did locally.
#[derive(Debug, Clone, Default)]
pub struct ContributionInfo {
    /// Contributor id.
    pub contributor: String,
    /// Number of labelled training examples used.
    pub num_examples: u64,
    /// Local metrics (finite values only).
    pub metrics: BTreeMap<String, f64>,
}

/// Collects encoded tensors of one diff and writes the contribution directory.
#[derive(Debug)]
pub struct DiffBuilder {
    encoding: Encoding,
    entries: Vec<TensorEntry>,
    specs: Vec<TensorSpec>,
    data: Vec<Vec<u8>>,
    names: HashSet<String>,
    dp: Option<DpConfig>,
}

/// One body tensor's `fine-tuned − base` values, under the base's original name.
#[derive(Debug, Clone)]
pub struct TensorDelta {
    /// Name in the base checkpoint.
    pub name: String,
    /// The base tensor's dtype.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Flattened differences.
    pub values: Vec<f32>,
}

/// `body - base` for every body variable the base has (fresh variables are skipped with a warning).
pub fn body_deltas(
    base: &ModelDir,
    body: &BTreeMap<String, Var>,
) -> Result<Vec<TensorDelta>, DiffError> {
    let weights_err = |e: candle_core::Error| DiffError::Manifest(format!("diff: {e}"));
    let mut out = Vec::with_capacity(body.len());
    for (canon, var) in body {
        let Some(base_tensor) = base.tensors.get(canon) else {
            tracing::warn!(tensor = %canon, "not in the base; left out of the diff");
            continue;
        };
        let dtype = dtype_of(base_tensor.dtype()).ok_or_else(|| DiffError::NotFloat {
            name: canon.clone(),
            dtype: Dtype::I64,
        })?;
        let values = var
            .as_tensor()
            .to_device(&candle_core::Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.sub(&base_tensor.to_dtype(DType::F32)?))
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(weights_err)?;
        out.push(TensorDelta {
            name: base.original_name(canon),
            dtype,
            shape: base_tensor.dims().to_vec(),
            values,
        });
    }
    Ok(out)
}

impl DiffBuilder {
    /// Starts a diff stored with `encoding`.
    pub fn new(encoding: Encoding) -> Result<Self, DiffError> {
        encoding.validate().map_err(DiffError::Manifest)?;
        Ok(Self {
            encoding,
            entries: Vec::new(),
            specs: Vec::new(),
            data: Vec::new(),
            names: HashSet::new(),
            dp: None,
        })
    }

    /// Adds the diff of base tensor `name` (base dtype `dtype`, `shape`), flattened in `values`.
    pub fn add(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[usize],
        values: &[f32],
    ) -> Result<(), DiffError> {
        let numel: usize = shape.iter().product();
        if values.len() != numel {
            return Err(DiffError::Layout {
                name: name.into(),
                message: format!("{} values for shape {shape:?}", values.len()),
            });
        }
        if !self.names.insert(name.to_string()) {
            return Err(DiffError::Layout {
                name: name.into(),
                message: "added twice".into(),
            });
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(DiffError::NonFinite {
                name: name.into(),
                index,
                value,
            });
        }
        let encoded = encode(values, shape, self.encoding);
        for part in encoded.parts {
            self.specs.push(TensorSpec {
                name: format!("{name}{}", part.suffix),
                dtype: part.dtype,
                shape: part.shape,
            });
            self.data.push(part.bytes);
        }
        self.entries.push(TensorEntry {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
            scale: encoded.scale,
            kept: encoded.kept,
        });
        Ok(())
    }

    /// Adds `body - base` for every body variable that exists in `base` (by canonical name, written
    /// under the base's original name). Variables the base lacks (freshly initialised ones) are skipped.
    pub fn add_body(
        &mut self,
        base: &ModelDir,
        body: &BTreeMap<String, Var>,
    ) -> Result<(), DiffError> {
        for d in body_deltas(base, body)? {
            self.add(&d.name, d.dtype, &d.shape, &d.values)?;
        }
        Ok(())
    }

    /// As [`DiffBuilder::add_body`], with the whole diff clipped and noised first (see
    /// [`super::privacy`]); `seed` only for reproducible tests.
    pub fn add_body_private(
        &mut self,
        base: &ModelDir,
        body: &BTreeMap<String, Var>,
        dp: &DpConfig,
        seed: Option<u64>,
    ) -> Result<DpReport, DiffError> {
        let mut deltas = body_deltas(base, body)?;
        let mut views: Vec<&mut [f32]> =
            deltas.iter_mut().map(|d| d.values.as_mut_slice()).collect();
        let report = privatize(&mut views, dp, seed)?;
        for d in deltas {
            self.add(&d.name, d.dtype, &d.shape, &d.values)?;
        }
        self.dp = Some(*dp);
        Ok(report)
    }

    /// Writes `dir/diff.safetensors` and `dir/manifest.json` and returns the manifest.
    pub fn finish(
        self,
        dir: &Path,
        base: BaseRef,
        architecture: &str,
        info: ContributionInfo,
    ) -> Result<DiffManifest, DiffError> {
        if self.entries.is_empty() {
            return Err(DiffError::Empty);
        }
        std::fs::create_dir_all(dir).map_err(|e| DiffError::io(dir, e))?;
        let diff_path = dir.join(DIFF_FILE);
        let writer = TensorFileWriter::create(&diff_path, &self.specs, &BTreeMap::new())?;
        for (index, bytes) in self.data.iter().enumerate() {
            writer.write_at(index, 0, bytes)?;
        }
        writer.finish()?;
        let diff_sha256 = sha256_file(&diff_path).map_err(|e| DiffError::io(&diff_path, e))?;
        let diff_bytes = std::fs::metadata(&diff_path)
            .map_err(|e| DiffError::io(&diff_path, e))?
            .len();
        let manifest = DiffManifest {
            format_version: FORMAT_VERSION,
            base,
            architecture: architecture.to_string(),
            encoding: self.encoding,
            tensors: self.entries,
            num_examples: info.num_examples,
            metrics: info.metrics,
            contributor: info.contributor,
            diff_sha256,
            diff_bytes,
            created_by: concat!("coldfuse ", env!("CARGO_PKG_VERSION")).to_string(),
            dp: self.dp,
        };
        let manifest_path = dir.join(MANIFEST_FILE);
        std::fs::write(&manifest_path, manifest.to_json())
            .map_err(|e| DiffError::io(&manifest_path, e))?;
        Ok(manifest)
    }
}

/// The safetensors dtype of a candle float dtype.
fn dtype_of(dtype: DType) -> Option<Dtype> {
    match dtype {
        DType::F32 => Some(Dtype::F32),
        DType::F16 => Some(Dtype::F16),
        DType::BF16 => Some(Dtype::Bf16),
        _ => None,
    }
}
