//! Small synthetic bases and diffs for the diff-format and fusion tests.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use coldfuse_shared::{
    diff::{BaseInfo, BaseRef, ContributionInfo, DiffBuilder, DiffManifest, Encoding, DIFF_FILE},
    tensorfile::{Dtype, TensorFile, TensorFileWriter, TensorSpec},
};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Body tensors (float, diffed) of the synthetic BERT-like base.
pub const BODY: &[(&str, &[usize])] = &[
    ("bert.embeddings.word_embeddings.weight", &[50, 8]),
    ("bert.encoder.layer.0.attention.self.query.weight", &[8, 8]),
    ("bert.encoder.layer.0.attention.self.query.bias", &[8]),
    ("bert.pooler.dense.weight", &[8, 8]),
];
/// Head tensors: never diffed, copied unchanged.
pub const HEAD: &[(&str, &[usize])] = &[("classifier.weight", &[2, 8]), ("classifier.bias", &[2])];
/// A non-float tensor: copied unchanged.
pub const POSITION_IDS: &str = "bert.embeddings.position_ids";

/// A base model dir in a temp dir, with its values.
pub struct Base {
    pub dir: tempfile::TempDir,
    pub dtype: Dtype,
    pub values: BTreeMap<String, Vec<f32>>,
}

impl Base {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn info(&self) -> BaseInfo {
        BaseInfo::open(self.path()).expect("synthetic base opens")
    }

    pub fn base_ref(&self) -> BaseRef {
        BaseRef {
            id: "synthetic".into(),
            sha256: self.info().sha256,
        }
    }
}

pub fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-1.0f32..1.0) * scale)
        .collect()
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Writes a synthetic base (config.json with model_type bert + model.safetensors) of `dtype`.
pub fn base(dtype: Dtype, seed: u64) -> Base {
    base_with(dtype, seed, |_, _| {})
}

/// [`base`], with `edit` applied to each float tensor's random values before they are written.
pub fn base_with(dtype: Dtype, seed: u64, edit: impl Fn(&str, &mut Vec<f32>)) -> Base {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        br#"{"model_type": "bert", "hidden_size": 8}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), b"{}").unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut values = BTreeMap::new();
    let mut specs = Vec::new();
    let mut data: Vec<Vec<u8>> = Vec::new();
    for &(name, shape) in BODY.iter().chain(HEAD) {
        let mut v = random(&mut rng, numel(shape), 0.5);
        edit(name, &mut v);
        let v = round_to(dtype, &v);
        specs.push(TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        });
        data.push(to_bytes(dtype, &v));
        values.insert(name.to_string(), v);
    }
    specs.push(TensorSpec {
        name: POSITION_IDS.into(),
        dtype: Dtype::I64,
        shape: vec![1, 16],
    });
    data.push((0..16i64).flat_map(|i| i.to_le_bytes()).collect());
    write_tensors(&dir.path().join("model.safetensors"), &specs, &data);
    Base { dir, dtype, values }
}

pub fn write_tensors(path: &Path, specs: &[TensorSpec], data: &[Vec<u8>]) {
    let meta: BTreeMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let w = TensorFileWriter::create(path, specs, &meta).unwrap();
    for (i, d) in data.iter().enumerate() {
        w.write_at(i, 0, d).unwrap();
    }
    w.finish().unwrap();
}

/// Values as stored in `dtype` and read back as f32.
pub fn round_to(dtype: Dtype, v: &[f32]) -> Vec<f32> {
    match dtype {
        Dtype::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
        Dtype::Bf16 => v
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect(),
        _ => v.to_vec(),
    }
}

pub fn to_bytes(dtype: Dtype, v: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        Dtype::Bf16 => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Random body diffs for one contribution.
pub fn random_diff(seed: u64, scale: f32) -> BTreeMap<String, Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    BODY.iter()
        .map(|&(name, shape)| (name.to_string(), random(&mut rng, numel(shape), scale)))
        .collect()
}

/// A contribution written to its own temp dir.
pub struct Contribution {
    pub dir: tempfile::TempDir,
    pub manifest: DiffManifest,
}

impl Contribution {
    pub fn diff_path(&self) -> PathBuf {
        self.dir.path().join(DIFF_FILE)
    }
}

/// Writes `diff` against `base` with `encoding`.
pub fn contribute(
    base: &Base,
    contributor: &str,
    diff: &BTreeMap<String, Vec<f32>>,
    encoding: Encoding,
    examples: u64,
) -> Contribution {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = DiffBuilder::new(encoding).unwrap();
    for &(name, shape) in BODY {
        if let Some(v) = diff.get(name) {
            builder.add(name, base.dtype, shape, v).unwrap();
        }
    }
    let info = ContributionInfo {
        contributor: contributor.into(),
        num_examples: examples,
        metrics: [("dev_accuracy".to_string(), 0.5)].into(),
    };
    let manifest = builder
        .finish(dir.path(), base.base_ref(), "bert", info)
        .unwrap();
    Contribution { dir, manifest }
}

/// Every tensor of a safetensors file as f32 (floats) or raw bytes (others), by name.
pub fn read_all(path: &Path) -> BTreeMap<String, (Vec<f32>, Vec<u8>)> {
    let file = TensorFile::open(path).unwrap();
    let mut out = BTreeMap::new();
    for info in &file.header.tensors {
        let mut raw = vec![0u8; info.nbytes as usize];
        file.read_raw(info, 0, &mut raw).unwrap();
        let floats = if info.dtype.is_weight_float() {
            let mut f = vec![0f32; info.numel()];
            file.read_f32(info, 0, &mut f, &mut Vec::new()).unwrap();
            f
        } else {
            Vec::new()
        };
        out.insert(info.name.clone(), (floats, raw));
    }
    out
}
