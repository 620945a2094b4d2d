//! Canonical tensor names: HF checkpoints name the same weight `bert.x`, `x`, or (legacy) `...gamma`.

/// Maps an original checkpoint name to its canonical form: the architecture prefix is stripped and
/// legacy LayerNorm `gamma`/`beta` become `weight`/`bias`. Returns whether the prefix was present.
pub fn canonical(name: &str, prefix: &str) -> (String, bool) {
    let (stripped, had_prefix) = match name.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) {
        Some(rest) => (rest, true),
        None => (name, false),
    };
    let renamed = if let Some(base) = stripped.strip_suffix(".gamma") {
        format!("{base}.weight")
    } else if let Some(base) = stripped.strip_suffix(".beta") {
        format!("{base}.bias")
    } else {
        stripped.to_string()
    };
    (renamed, had_prefix)
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn strips_prefix_and_renames_legacy_layer_norm() {
        assert_eq!(
            canonical("roberta.encoder.layer.0.output.dense.weight", "roberta").0,
            "encoder.layer.0.output.dense.weight"
        );
        assert!(canonical("bert.embeddings.LayerNorm.gamma", "bert").1);
        assert_eq!(
            canonical("bert.embeddings.LayerNorm.gamma", "bert").0,
            "embeddings.LayerNorm.weight"
        );
        assert_eq!(
            canonical("embeddings.LayerNorm.beta", "bert"),
            ("embeddings.LayerNorm.bias".into(), false)
        );
        assert_eq!(
            canonical("classifier.out_proj.weight", "roberta").0,
            "classifier.out_proj.weight"
        );
        assert_eq!(canonical("robertaX.y", "roberta").0, "robertaX.y");
    }
}
