//! Helpers shared by the model tests: golden fixtures, tolerances, the MiniLM location.
#![allow(dead_code, missing_docs)]

use std::{collections::HashMap, path::PathBuf};

use candle_core::{DType, Device, Tensor};
use coldfuse_shared::{Batch, HeadInit, ModelDir, SequenceClassifier};

/// `fixtures/golden/<name>` at the repository root.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/golden")
        .join(name)
}

/// The fixture's reference tensors (from transformers).
pub fn golden(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("golden.safetensors"), &Device::Cpu)
        .expect("golden.safetensors readable")
}

/// The fixture's golden.json.
pub fn meta(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name).join("golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

fn host_u32(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&v| v as u32)
        .collect()
}

/// The batch the fixture was computed on.
pub fn golden_batch(g: &HashMap<String, Tensor>) -> Batch {
    golden_batch_on(g, &Device::Cpu)
}

/// The batch the fixture was computed on, its tensors on `device`.
pub fn golden_batch_on(g: &HashMap<String, Tensor>, device: &Device) -> Batch {
    let ids = &g["input_ids"];
    let (b, t) = ids.dims2().unwrap();
    let types = g.get("token_type_ids").map(host_u32);
    Batch::new(
        host_u32(ids),
        host_u32(&g["attention_mask"]),
        types,
        b,
        t,
        device,
    )
    .unwrap()
}

/// CUDA GPU 0 for the GPU variants of the checks. Without the `cuda` feature or a GPU they pass
/// without checking anything (saying so), except under `COLDFUSE_REQUIRE_GPU=1`, which
/// scripts/gpu-check.sh sets: there a missing GPU fails them.
pub fn cuda() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(device) => Some(device),
        Err(e) if std::env::var_os("COLDFUSE_REQUIRE_GPU").is_some() => {
            panic!("COLDFUSE_REQUIRE_GPU is set but there is no CUDA GPU: {e}")
        }
        Err(e) => {
            eprintln!("no CUDA GPU ({e}): the GPU check did not run");
            None
        }
    }
}

/// The body of `dir` on the CPU with a fresh seeded head of `num_labels` outputs.
pub fn fresh_classifier(dir: &ModelDir, num_labels: usize, seed: u64) -> SequenceClassifier {
    SequenceClassifier::load(dir, HeadInit::Fresh { num_labels, seed }, &Device::Cpu)
        .expect("classifier loads")
}

/// Largest absolute elementwise difference.
pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let cpu = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    let (a, b) = (cpu(a), cpu(b));
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Norm floor for [`rel_err`]: gradients that are analytically zero (the attention key bias: softmax
/// ignores a per-row constant) come out as ~1e-13 noise in both frameworks and are compared absolutely.
pub const NORM_FLOOR: f32 = 1e-7;

/// ‖a − b‖ / max(‖b‖, NORM_FLOOR).
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    rel_err_floor(a, b, NORM_FLOOR)
}

/// Norm floor for gradients computed on a GPU: cuBLAS sums in another order than the CPU, so an
/// analytically zero gradient's noise there is compared absolutely at 1e-7 × the gradient tolerance.
pub const GPU_NORM_FLOOR: f32 = 1e-4;

/// ‖a − b‖ / max(‖b‖, floor).
pub fn rel_err_floor(a: &Tensor, b: &Tensor, floor: f32) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let norm = |t: &Tensor| {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt()
    };
    let (a, b) = (
        &a.to_device(&Device::Cpu).unwrap(),
        &b.to_device(&Device::Cpu).unwrap(),
    );
    let d = norm(&(a - b).unwrap());
    d / norm(b).max(floor)
}

/// The all-MiniLM-L6-v2 dir installed by scripts/assets.sh (`COLDFUSE_MINILM_DIR`).
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var("COLDFUSE_MINILM_DIR").expect(
        "COLDFUSE_MINILM_DIR is not set: run the README test command (scripts/test.sh), \
         or `eval \"$(scripts/assets.sh)\"` first",
    );
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} has no model.safetensors",
        dir.display()
    );
    dir
}

/// The SMS Spam Collection TSV installed by scripts/assets.sh (`COLDFUSE_SMS_SPAM`).
pub fn sms_spam_file() -> PathBuf {
    let path = std::env::var("COLDFUSE_SMS_SPAM").expect(
        "COLDFUSE_SMS_SPAM is not set: run the README test command (scripts/test.sh), \
         or `eval \"$(scripts/assets.sh)\"` first",
    );
    let path = PathBuf::from(path);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// Token-id lists stored under `tokenizer.<key>` in a fixture's golden.json.
pub fn token_ids(m: &serde_json::Value, key: &str) -> Vec<Vec<u32>> {
    m["tokenizer"][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}
pub mod synth;
