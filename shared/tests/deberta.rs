//! DeBERTa-v2/v3 against transformers' golden fixtures (`deberta_tiny`: v3-style log buckets, shared keys,
//! p2c+c2p, LayerNorm'd relative embeddings; `deberta_conv`: v2-xlarge-style grouped convolution, c2p only,
//! separate position projections, embed_proj, absolute positions and segments), plus trainability, the
//! save round trip, the tokenizer and loud failures on what we do not support. Forward and gradient
//! checks against the fixtures run with the other architectures' in `golden.rs`.

mod common;

use std::{collections::BTreeMap, fs, path::Path};

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use coldfuse_shared::{
    checkpoint::WeightsSource, classifier::Encoder, model::deberta::position::log_bucket,
    model::loss::cross_entropy, Batch, ForwardCtx, HeadInit, ModelDir, SequenceClassifier,
    TextTokenizer,
};
use common::{golden, golden_batch, max_abs, meta, token_ids};

const FIXTURES: [&str; 2] = ["deberta_tiny", "deberta_conv"];

fn model_dir(name: &str) -> std::path::PathBuf {
    common::fixture(name).join("model")
}

fn load(name: &str, head: HeadInit) -> SequenceClassifier {
    let dir = ModelDir::open(model_dir(name)).expect("fixture opens");
    SequenceClassifier::load(&dir, head, &Device::Cpu).expect("model loads")
}

/// Our f32 log buckets equal transformers' for DeBERTa-v3-base's settings over ±1100 positions.
#[test]
fn deberta_log_buckets_match_transformers() {
    let table = &meta("deberta_tiny")["log_buckets"];
    let size = table["bucket_size"].as_i64().unwrap();
    let max = table["max_position"].as_i64().unwrap();
    let first = table["first"].as_i64().unwrap();
    let buckets = table["buckets"].as_array().unwrap();
    for (i, want) in buckets.iter().enumerate() {
        let rel = first + i as i64;
        assert_eq!(
            log_bucket(rel, size, max),
            want.as_i64().unwrap(),
            "relative position {rel}"
        );
    }
}

/// Padding must not change real tokens' outputs: a sequence alone equals its padded row.
#[test]
fn deberta_padding_does_not_leak() {
    for name in FIXTURES {
        let g = golden(name);
        let model = load(name, HeadInit::FromCheckpoint);
        let full = golden_batch(&g);
        let (out, _) = model.forward(&full, &ForwardCtx::eval()).unwrap();
        let t = full.seq_len;
        let real = |row: usize| full.mask[row * t..(row + 1) * t].iter().sum::<u32>() as usize;
        let row = (0..full.batch_size).min_by_key(|&r| real(r)).unwrap();
        let n = real(row);
        assert!(n < t, "{name}: the shortest row should be padded");
        let slice = |v: &[u32]| v[row * t..row * t + n].to_vec();
        let single = Batch::new(
            slice(&full.ids),
            slice(&full.mask),
            Some(slice(&full.type_ids)),
            1,
            n,
            &Device::Cpu,
        )
        .unwrap();
        let (alone, _) = model.forward(&single, &ForwardCtx::eval()).unwrap();
        let padded = out
            .hidden
            .narrow(0, row, 1)
            .unwrap()
            .narrow(1, 0, n)
            .unwrap();
        let err = max_abs(&alone.hidden, &padded);
        assert!(err <= 1e-5, "{name}: padding changed real tokens by {err}");
    }
}

/// Gradients that are zero in exact arithmetic, for any input: a key bias adds the same amount to
/// every score of a query row (softmax ignores it) unless position queries are taken against the keys
/// (p2c with share_att_key), and so does the bias of the separate c2p position-key projection.
fn analytically_zero(fixture: &str, name: &str) -> bool {
    match fixture {
        "deberta_conv" => {
            name.ends_with("attention.self.key_proj.bias")
                || name.ends_with("attention.self.pos_key_proj.bias")
        }
        _ => false,
    }
}

/// Every parameter gets a gradient and moves after one AdamW step, with dropout on.
#[test]
fn deberta_every_parameter_gets_gradient_and_moves() {
    for name in FIXTURES {
        let model = load(
            name,
            HeadInit::Fresh {
                num_labels: 2,
                seed: 7,
            },
        );
        let batch = golden_batch(&golden(name));
        let labels = Tensor::new(&[0u32, 1, 1], &Device::Cpu).unwrap();
        let mut vars = model.encoder.vars();
        vars.extend(model.head_vars());
        let before: BTreeMap<String, Tensor> = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().copy().unwrap()))
            .collect();
        let (_, logits) = model.forward(&batch, &ForwardCtx::train(3)).unwrap();
        let grads = cross_entropy(&logits, &labels).unwrap().backward().unwrap();
        for (pname, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: {pname} got no gradient"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            if !analytically_zero(name, pname) {
                assert!(norm > 0.0, "{name}: {pname} has a zero gradient");
            }
        }
        let params = ParamsAdamW {
            lr: 1e-3,
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(vars.values().cloned().collect(), params).unwrap();
        opt.step(&grads).unwrap();
        for (pname, old) in before {
            if !analytically_zero(name, &pname) {
                let moved = max_abs(vars[&pname].as_tensor(), &old);
                assert!(moved > 0.0, "{name}: {pname} did not move");
            }
        }
    }
}

#[test]
fn deberta_dropout_on_in_train_off_in_eval() {
    for name in FIXTURES {
        let model = load(name, HeadInit::FromCheckpoint);
        let batch = golden_batch(&golden(name));
        let run = |ctx: &ForwardCtx| model.forward(&batch, ctx).unwrap().1;
        assert_eq!(
            max_abs(&run(&ForwardCtx::eval()), &run(&ForwardCtx::eval())),
            0.0
        );
        let same = max_abs(&run(&ForwardCtx::train(5)), &run(&ForwardCtx::train(5)));
        assert_eq!(same, 0.0, "{name}: a seed fixes the dropout masks");
        let other = max_abs(&run(&ForwardCtx::train(5)), &run(&ForwardCtx::train(6)));
        assert!(other > 1e-6, "{name}: dropout changes outputs in training");
    }
}

/// Without absolute positions (v3) a sequence may exceed max_position_embeddings (64 here): relative
/// distances are bucketed and clamped. With them (v2-style) it is a clear error.
#[test]
fn deberta_sequence_length_limits() {
    let long = |n: usize| Batch::new(vec![5; n], vec![1; n], None, 1, n, &Device::Cpu).unwrap();
    let v3 = load("deberta_tiny", HeadInit::FromCheckpoint);
    let (out, _) = v3.forward(&long(100), &ForwardCtx::eval()).unwrap();
    assert_eq!(out.hidden.dims(), &[1, 100, 32]);
    let v2 = load("deberta_conv", HeadInit::FromCheckpoint);
    let err = v2
        .forward(&long(129), &ForwardCtx::eval())
        .unwrap_err()
        .to_string();
    assert!(err.contains("129 tokens") && err.contains("128"), "{err}");
}

/// Like `nn.Embedding(padding_idx=0)`: a padding id inside the attended text gets no gradient.
#[test]
fn deberta_padding_row_gets_no_gradient() {
    let model = load("deberta_tiny", HeadInit::FromCheckpoint);
    let batch = Batch::new(vec![1, 5, 0, 7, 2], vec![1; 5], None, 1, 5, &Device::Cpu).unwrap();
    let (_, logits) = model.forward(&batch, &ForwardCtx::eval()).unwrap();
    let labels = Tensor::new(&[1u32], &Device::Cpu).unwrap();
    let grads = cross_entropy(&logits, &labels).unwrap().backward().unwrap();
    let w = &model.encoder.vars()["embeddings.word_embeddings.weight"];
    let g = grads.get(w.as_tensor()).unwrap();
    let row = |i: usize| g.get(i).unwrap().abs().unwrap().sum_all().unwrap();
    assert_eq!(row(0).to_scalar::<f32>().unwrap(), 0.0, "padding row");
    assert!(
        row(5).to_scalar::<f32>().unwrap() > 0.0,
        "a real token's row"
    );
}

fn raw_tensors(path: &Path) -> BTreeMap<String, Tensor> {
    WeightsSource::find(path)
        .unwrap()
        .read_all()
        .unwrap()
        .into_iter()
        .collect()
}

/// save_with_body writes the body with transformers' names (no head: `classifier.*`, `pooler.*`), the
/// tokenizer files, and a dir that reloads to identical outputs.
#[test]
fn deberta_save_roundtrip_reloads_identically() {
    for name in FIXTURES {
        let src = model_dir(name);
        let dir = ModelDir::open(&src).unwrap();
        assert!(
            dir.prefixed,
            "{name}: task checkpoint names are `deberta.`-prefixed"
        );
        let enc = Encoder::load(&dir, &Device::Cpu).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("saved");
        dir.save_with_body(&out, &enc.vars()).unwrap();

        let original = raw_tensors(&src);
        let saved = raw_tensors(&out);
        let expected: Vec<&String> = original
            .keys()
            .filter(|n| !n.starts_with("classifier.") && !n.starts_with("pooler."))
            .collect();
        assert_eq!(saved.keys().collect::<Vec<_>>(), expected, "{name}");
        for (t, o) in saved.iter().map(|(n, t)| (t, &original[n])) {
            assert_eq!(max_abs(t, o), 0.0);
        }
        for f in ["spm.model", "tokenizer.json", "tokenizer_config.json"] {
            assert!(out.join(f).is_file(), "{name}: {f} copied");
        }
        let g = golden(name);
        let reloaded = Encoder::load(&ModelDir::open(&out).unwrap(), &Device::Cpu).unwrap();
        let a = enc.forward(&golden_batch(&g), &ForwardCtx::eval()).unwrap();
        let b = reloaded
            .forward(&golden_batch(&g), &ForwardCtx::eval())
            .unwrap();
        assert_eq!(max_abs(&a.hidden, &b.hidden), 0.0, "{name}: same outputs");
    }
}

/// tokenizer.json (converted from spm.model by transformers) encodes exactly as transformers does.
#[test]
fn deberta_tokenizer_json_matches_transformers() {
    let m = meta("deberta_tiny");
    let tok = TextTokenizer::from_dir(&model_dir("deberta_tiny"), 512).unwrap();
    let texts: Vec<&str> = m["tokenizer"]["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for (text, want) in texts.iter().zip(token_ids(&m, "single")) {
        let b = tok.encode(&[text], None, &Device::Cpu).unwrap();
        assert_eq!(b.ids, want, "{text}");
    }
    let pairs = m["tokenizer"]["pair_texts"].as_array().unwrap();
    let types = token_ids(&m, "pair_types");
    for ((pair, want), want_types) in pairs.iter().zip(token_ids(&m, "pairs")).zip(types) {
        let (a, b) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        let enc = tok.encode(&[a], Some(&[b]), &Device::Cpu).unwrap();
        assert_eq!(enc.ids, want, "{a} / {b}");
        assert_eq!(enc.type_ids, want_types, "{a} / {b}");
    }
}

fn copy_model(name: &str, dst: &Path, skip: &[&str]) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(model_dir(name)).unwrap() {
        let entry = entry.unwrap();
        if !skip.contains(&entry.file_name().to_str().unwrap()) {
            fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
}

/// A DeBERTa-v3 dir as published (spm.model, no tokenizer.json) fails with the exact one-line
/// conversion; make_fixtures.py produces the fixture tokenizers by running that same line.
#[test]
fn deberta_spm_only_dir_error_gives_the_conversion_one_liner() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("deberta-v3");
    copy_model("deberta_tiny", &d, &["tokenizer.json"]);
    let err = TextTokenizer::from_dir(&d, 128).unwrap_err().to_string();
    let line = meta("deberta_tiny")["spm_convert"]
        .as_str()
        .unwrap()
        .replace("{d}", &d.display().to_string());
    assert!(err.contains(&format!("python -c \"{line}\"")), "{err}");
    assert!(
        err.contains("spm.model") && err.contains("sentencepiece protobuf"),
        "{err}"
    );
}

fn load_error(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("m");
    copy_model("deberta_tiny", &d, &[]);
    let path = d.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    fs::write(&path, cfg.to_string()).unwrap();
    ModelDir::open(&d)
        .and_then(|dir| SequenceClassifier::load(&dir, HeadInit::FromCheckpoint, &Device::Cpu))
        .map(|_| ())
        .expect_err("unsupported config must not load")
        .to_string()
}

#[test]
fn deberta_unsupported_config_options_fail_loudly() {
    let e = load_error(|c| c["pos_att_type"] = "p2c|c2p|p2p".into());
    assert!(e.contains("unsupported config") && e.contains("p2p"), "{e}");
    let e = load_error(|c| c["norm_rel_ebd"] = "layer_norm|rms".into());
    assert!(e.contains("norm_rel_ebd") && e.contains("rms"), "{e}");
    let e = load_error(|c| c["attention_head_size"] = 16.into());
    assert!(e.contains("attention_head_size"), "{e}");
    let e = load_error(|c| c["pooler_hidden_act"] = "swish_v9".into());
    assert!(e.contains("swish_v9"), "{e}");
    let e = load_error(|c| c["model_type"] = "deberta".into());
    assert!(e.contains("`deberta`") && e.contains("deberta-v2"), "{e}");
}

/// Developer check (needs PyTorch): transformers' AutoModel loads what we save and reproduces the
/// fixture. Run by scripts/golden/check.sh, which sets COLDFUSE_PYREF_PYTHON.
#[test]
#[ignore = "needs PyTorch + transformers (scripts/golden/check.sh)"]
fn deberta_roundtrip_loads_in_transformers() {
    let python = std::env::var("COLDFUSE_PYREF_PYTHON").expect("COLDFUSE_PYREF_PYTHON");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/golden/make_fixtures.py");
    for fx in FIXTURES {
        let dir = ModelDir::open(model_dir(fx)).unwrap();
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
        assert!(status.success(), "transformers could not reproduce {fx}");
    }
}
