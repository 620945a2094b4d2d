//! Small real models for end-to-end runs: all-MiniLM-L6-v2 cut to its first layers, with its real
//! tokenizer and embeddings, so contributors learn real tasks in seconds.

use std::{collections::HashMap, path::Path};

use candle_core::{Device, Tensor};

/// The MiniLM directory installed by `scripts/assets.sh` (`COLDFUSE_MINILM_DIR`).
pub fn minilm_dir() -> std::path::PathBuf {
    std::env::var_os("COLDFUSE_MINILM_DIR")
        .map(Into::into)
        .expect("COLDFUSE_MINILM_DIR is not set: run `eval \"$(scripts/assets.sh)\"` (scripts/test.sh does)")
}

/// Writes MiniLM's first `layers` layers (embeddings, those layers, pooler) with its tokenizer to `out`.
pub fn minilm_layers(layers: usize, out: &Path) {
    let src = minilm_dir();
    std::fs::create_dir_all(out).unwrap();
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let kept: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter(|(name, _)| match name.strip_prefix("encoder.layer.") {
            Some(rest) => rest
                .split('.')
                .next()
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i < layers),
            None => true,
        })
        .collect();
    candle_core::safetensors::save(&kept, out.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    config["num_hidden_layers"] = layers.into();
    std::fs::write(
        out.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    for f in [
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        if src.join(f).is_file() {
            std::fs::copy(src.join(f), out.join(f)).unwrap();
        }
    }
}
