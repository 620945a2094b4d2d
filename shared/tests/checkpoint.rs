//! Checkpoint round trips (load → save → load) and clear errors on bad model directories.

mod common;

use std::{collections::BTreeMap, fs, path::Path};

use candle_core::{DType, Device, Tensor};
use coldfuse_shared::{
    checkpoint::WeightsSource, classifier::Encoder, CheckpointError, ForwardCtx, ModelDir,
};
use common::{golden, golden_batch, max_abs};

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
}

fn raw_tensors(path: &Path) -> BTreeMap<String, Tensor> {
    WeightsSource::find(path)
        .unwrap()
        .read_all()
        .unwrap()
        .into_iter()
        .collect()
}

/// Saves the loaded body and checks names, dtypes, bits, config and outputs survive.
fn roundtrip(model_dir: &Path, fixture: Option<&str>) {
    let dir = ModelDir::open(model_dir).unwrap();
    let enc = Encoder::load(&dir, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("saved");
    dir.save_with_body(&out, &enc.vars()).unwrap();

    let original = raw_tensors(model_dir);
    let saved = raw_tensors(&out);
    let expected: Vec<&String> = original
        .keys()
        .filter(|n| !n.starts_with("classifier."))
        .collect();
    assert_eq!(
        saved.keys().collect::<Vec<_>>(),
        expected,
        "same tensor names, minus the head"
    );
    for (name, t) in &saved {
        assert_eq!(t.dtype(), original[name].dtype(), "{name} dtype");
        assert_eq!(t.dims(), original[name].dims(), "{name} shape");
        if t.dtype() == DType::F32 {
            assert_eq!(max_abs(t, &original[name]), 0.0, "{name} bits");
        }
    }
    let cfg = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(d.join("config.json")).unwrap()).unwrap()
    };
    assert_eq!(cfg(&out), cfg(model_dir), "config.json unchanged");
    for f in coldfuse_shared::checkpoint::TOKENIZER_FILES {
        assert_eq!(
            model_dir.join(f).is_file(),
            out.join(f).is_file(),
            "tokenizer file {f} copied"
        );
    }
    if let Some(fx) = fixture {
        let g = golden(fx);
        let reloaded = Encoder::load(&ModelDir::open(&out).unwrap(), &Device::Cpu).unwrap();
        let a = enc
            .forward(&golden_batch(&g), &ForwardCtx::eval())
            .unwrap()
            .hidden;
        let b = reloaded
            .forward(&golden_batch(&g), &ForwardCtx::eval())
            .unwrap()
            .hidden;
        assert_eq!(max_abs(&a, &b), 0.0, "reloaded model computes the same");
    }
}

#[test]
fn checkpoint_roundtrip_bert_prefixed_safetensors() {
    roundtrip(
        &common::fixture("bert_tiny").join("model"),
        Some("bert_tiny"),
    );
}

#[test]
fn checkpoint_roundtrip_roberta_from_pytorch_bin() {
    roundtrip(
        &common::fixture("roberta_distil").join("model"),
        Some("roberta_distil"),
    );
}

/// MiniLM has no prefix and an I64 `embeddings.position_ids` buffer that must pass through untouched.
#[test]
fn checkpoint_roundtrip_minilm_bert_keeps_buffers() {
    roundtrip(&common::minilm_dir(), None);
}

/// Trained values are what gets written.
#[test]
fn checkpoint_bert_save_writes_current_body_values() {
    let src = common::fixture("bert_tiny").join("model");
    let dir = ModelDir::open(&src).unwrap();
    let enc = Encoder::load(&dir, &Device::Cpu).unwrap();
    let name = "encoder.layer.0.output.dense.bias";
    let var = &enc.vars()[name];
    var.set(&(var.as_tensor() + 1.0).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    dir.save_with_body(&tmp.path().join("out"), &enc.vars())
        .unwrap();
    let saved = raw_tensors(&tmp.path().join("out"));
    let orig = raw_tensors(&src);
    let key = format!("bert.{name}");
    let diff = (&saved[&key] - &orig[&key])
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((diff - 1.0).abs() < 1e-6);
}

/// A bad-fixture copy of bert_tiny, modified by `edit`, and the error opening + loading it gives.
fn broken(edit: impl FnOnce(&Path)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("m");
    copy_dir(&common::fixture("bert_tiny").join("model"), &d);
    edit(&d);
    let result = ModelDir::open(&d).and_then(|dir| Encoder::load(&dir, &Device::Cpu).map(|_| ()));
    result
        .expect_err("broken checkpoint must not load")
        .to_string()
}

fn rewrite_weights(d: &Path, edit: impl FnOnce(&mut BTreeMap<String, Tensor>)) {
    let mut t = raw_tensors(d);
    edit(&mut t);
    coldfuse_shared::checkpoint::write_safetensors(&d.join("model.safetensors"), &t).unwrap();
}

#[test]
fn checkpoint_errors_name_the_file_and_tensor() {
    let e = broken(|d| fs::remove_file(d.join("config.json")).unwrap());
    assert!(e.contains("config.json"), "{e}");

    let e = broken(|d| fs::write(d.join("config.json"), "{\"model_type\": \"gpt2\"}").unwrap());
    assert!(e.contains("gpt2") && e.contains("bert"), "{e}");

    let e = broken(|d| fs::write(d.join("config.json"), "{ not json").unwrap());
    assert!(
        e.contains("config.json") && e.contains("invalid JSON"),
        "{e}"
    );

    let e = broken(|d| fs::remove_file(d.join("model.safetensors")).unwrap());
    assert!(
        e.contains("model.safetensors") && e.contains("pytorch_model.bin"),
        "{e}"
    );

    let e = broken(|d| {
        let p = d.join("model.safetensors");
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert!(e.contains("model.safetensors"), "{e}");

    let e = broken(|d| {
        rewrite_weights(d, |t| {
            t.insert(
                "bert.encoder.layer.1.attention.self.query.weight".into(),
                Tensor::zeros((32, 31), DType::F32, &Device::Cpu).unwrap(),
            );
        })
    });
    assert!(
        e.contains("encoder.layer.1.attention.self.query.weight"),
        "{e}"
    );
    assert!(
        e.contains("[32, 31]") && e.contains("[32, 32]") && e.contains("model.safetensors"),
        "{e}"
    );

    let e = broken(|d| {
        rewrite_weights(d, |t| {
            t.remove("bert.encoder.layer.0.intermediate.dense.bias");
        })
    });
    assert!(
        e.contains("missing tensor `encoder.layer.0.intermediate.dense.bias`"),
        "{e}"
    );
    assert!(e.contains("model.safetensors"), "{e}");

    let e = broken(|d| {
        let p = d.join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
        v["position_embedding_type"] = "relative_key".into();
        fs::write(&p, v.to_string()).unwrap();
    });
    assert!(e.contains("relative_key"), "{e}");
}

#[test]
fn checkpoint_bert_missing_pooler_is_initialised_like_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("m");
    copy_dir(&common::fixture("bert_tiny").join("model"), &d);
    rewrite_weights(&d, |t| t.retain(|k, _| !k.contains("pooler")));
    let enc = Encoder::load(&ModelDir::open(&d).unwrap(), &Device::Cpu).unwrap();
    assert_eq!(
        enc.created(),
        vec![
            "pooler.dense.bias".to_string(),
            "pooler.dense.weight".to_string()
        ]
    );
    let again = Encoder::load(&ModelDir::open(&d).unwrap(), &Device::Cpu).unwrap();
    let w = "pooler.dense.weight";
    assert_eq!(
        max_abs(enc.vars()[w].as_tensor(), again.vars()[w].as_tensor()),
        0.0,
        "fixed seed"
    );
}

#[test]
fn checkpoint_save_refuses_a_non_empty_target() {
    let src = common::fixture("bert_tiny").join("model");
    let dir = ModelDir::open(&src).unwrap();
    let enc = Encoder::load(&dir, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("keep.txt"), "precious").unwrap();
    let err = dir.save_with_body(tmp.path(), &enc.vars()).unwrap_err();
    assert!(matches!(err, CheckpointError::OutputExists(_)), "{err}");
    assert_eq!(
        fs::read_to_string(tmp.path().join("keep.txt")).unwrap(),
        "precious"
    );
}

/// Developer check (needs PyTorch): transformers' AutoModel loads what we save and reproduces the
/// fixture. Run by scripts/golden/check.sh, which sets COLDFUSE_PYREF_PYTHON.
#[test]
#[ignore = "needs PyTorch + transformers (scripts/golden/check.sh)"]
fn checkpoint_roundtrip_loads_in_transformers_bert_roberta() {
    let python = std::env::var("COLDFUSE_PYREF_PYTHON").expect("COLDFUSE_PYREF_PYTHON");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/golden/make_fixtures.py");
    for fx in ["bert_tiny", "roberta_tiny", "roberta_distil"] {
        let dir = ModelDir::open(common::fixture(fx).join("model")).unwrap();
        let enc = Encoder::load(&dir, &Device::Cpu).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join(fx);
        dir.save_with_body(&out, &enc.vars()).unwrap();
        let status = std::process::Command::new(&python)
            .arg(&script)
            .args(["roundtrip", "--fixture", fx, "--saved"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "transformers could not reproduce {fx} from our saved dir"
        );
    }
}
