//! Synthetic roberta-like base and diff files of a chosen parameter count, for benchmarks (random
//! values, real file formats).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use crate::{
    diff::{
        BaseRef, ContributionInfo, DiffBuilder, DiffError, DiffManifest, Encoding, BASE_WEIGHTS,
    },
    hash::sha256_file,
    tensorfile::{Dtype, TensorFileWriter, TensorSpec},
};

/// Tensor names and shapes of a RoBERTa-like encoder with about `params` parameters
/// (roberta-base's layout at 125 M: hidden 768, 12 layers, the vocabulary absorbing the rest).
pub fn roberta_like(params: usize) -> Vec<(String, Vec<usize>)> {
    let h = if params >= 30_000_000 { 768 } else { 64 };
    let per_layer = 12 * h * h + 13 * h;
    let fixed = 514 * h + h + 2 * h + h * h + h;
    let layers = if params >= 12 * per_layer + fixed + 1000 * h {
        12
    } else {
        (params * 7 / 10 / per_layer).max(1)
    };
    let vocab = (params.saturating_sub(layers * per_layer + fixed) / h).max(1);
    let mut t: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>| t.push((format!("roberta.{name}"), shape));
    add("embeddings.word_embeddings.weight".into(), vec![vocab, h]);
    add("embeddings.position_embeddings.weight".into(), vec![514, h]);
    add("embeddings.token_type_embeddings.weight".into(), vec![1, h]);
    add("embeddings.LayerNorm.weight".into(), vec![h]);
    add("embeddings.LayerNorm.bias".into(), vec![h]);
    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        for m in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ] {
            add(format!("{p}.{m}.weight"), vec![h, h]);
            add(format!("{p}.{m}.bias"), vec![h]);
        }
        add(format!("{p}.attention.output.LayerNorm.weight"), vec![h]);
        add(format!("{p}.attention.output.LayerNorm.bias"), vec![h]);
        add(format!("{p}.intermediate.dense.weight"), vec![4 * h, h]);
        add(format!("{p}.intermediate.dense.bias"), vec![4 * h]);
        add(format!("{p}.output.dense.weight"), vec![h, 4 * h]);
        add(format!("{p}.output.dense.bias"), vec![h]);
        add(format!("{p}.output.LayerNorm.weight"), vec![h]);
        add(format!("{p}.output.LayerNorm.bias"), vec![h]);
    }
    add("pooler.dense.weight".into(), vec![h, h]);
    add("pooler.dense.bias".into(), vec![h]);
    t
}

/// Fast deterministic uniform values in (-scale, scale).
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Writes a base model dir (config.json + model.safetensors, f32) and returns its weights' SHA-256.
pub fn write_base(dir: &Path, layout: &[(String, Vec<usize>)]) -> Result<String, DiffError> {
    std::fs::create_dir_all(dir).map_err(|e| DiffError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        br#"{"model_type": "roberta", "architectures": ["RobertaModel"]}"#,
    )
    .map_err(|e| DiffError::Io {
        path: config.clone(),
        source: e,
    })?;
    let specs: Vec<TensorSpec> = layout
        .iter()
        .map(|(name, shape)| TensorSpec {
            name: name.clone(),
            dtype: Dtype::F32,
            shape: shape.clone(),
        })
        .collect();
    let meta: BTreeMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let path = dir.join(BASE_WEIGHTS);
    let writer = TensorFileWriter::create(&path, &specs, &meta)?;
    for (i, spec) in specs.iter().enumerate() {
        let v = values(i as u64 + 1, spec.shape.iter().product(), 0.05);
        writer.write_at(i, 0, bytemuck::cast_slice(&v))?;
    }
    writer.finish()?;
    sha256_file(&path).map_err(|e| DiffError::Io { path, source: e })
}

/// Writes contribution `index`'s diff (values of scale 1e-3) under `dir` and returns its manifest.
pub fn write_diff(
    dir: &Path,
    base: &BaseRef,
    layout: &[(String, Vec<usize>)],
    encoding: Encoding,
    index: usize,
) -> Result<DiffManifest, DiffError> {
    let mut builder = DiffBuilder::new(encoding)?;
    for (t, (name, shape)) in layout.iter().enumerate() {
        let n = shape.iter().product();
        let v = values(((index as u64 + 1) << 32) + t as u64, n, 1e-3);
        builder.add(name, Dtype::F32, shape, &v)?;
    }
    let info = ContributionInfo {
        contributor: format!("bench-{index}"),
        num_examples: 1000,
        metrics: BTreeMap::new(),
    };
    builder.finish(dir, base.clone(), "roberta", info)
}

/// Where contribution `index` lives under the bench directory.
pub fn diff_dir(root: &Path, index: usize) -> PathBuf {
    root.join(format!("diff-{index}"))
}
