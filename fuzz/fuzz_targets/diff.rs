//! A manifest (JSON) and a diff file, split at the first NUL byte, checked against a fixed tiny base:
//! opening, scanning and decoding must never panic; bad input is a typed error.
#![no_main]

mod common;

use std::sync::OnceLock;

use coldfuse_shared::{
    diff::{BaseInfo, DiffManifest, DiffReader, Scratch},
    tensorfile::{Dtype, TensorFileWriter, TensorSpec},
};
use libfuzzer_sys::fuzz_target;

fn base() -> &'static BaseInfo {
    static BASE: OnceLock<BaseInfo> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = common::scratch().join("base");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), br#"{"model_type": "bert"}"#).unwrap();
        let specs = [
            ("embeddings.word_embeddings.weight", Dtype::F32, vec![4, 2]),
            ("encoder.layer.0.output.dense.bias", Dtype::Bf16, vec![2]),
            ("classifier.weight", Dtype::F32, vec![2, 2]),
            ("embeddings.position_ids", Dtype::I64, vec![1, 2]),
        ]
        .map(|(name, dtype, shape)| TensorSpec { name: name.into(), dtype, shape });
        let w = TensorFileWriter::create(dir.join("model.safetensors"), &specs, &Default::default())
            .unwrap();
        w.finish().unwrap();
        // A fixed hash the fuzzer can learn from the seed corpus.
        BaseInfo::open_with_sha256(&dir, "a".repeat(64)).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let Ok(mut manifest) = DiffManifest::from_json(&data[..split]) else {
        return;
    };
    let body = data.get(split + 1..).unwrap_or(&[]);
    manifest.diff_bytes = body.len() as u64;
    let path = common::file("d.safetensors", body);
    let Ok(reader) = DiffReader::open(&path, manifest, base()) else {
        return;
    };
    let _ = reader.scan();
    let mut scratch = Scratch::default();
    for t in reader.tensors() {
        let mut out = vec![0f32; t.numel.min(1 << 20)];
        let _ = reader.decode(t, 0, &mut out, 1.0, &mut scratch);
    }
});
