//! Forward passes and gradients of our encoders against transformers' golden fixtures.

mod common;

use candle_core::{Device, Tensor};
use coldfuse_shared::{
    model::loss::cross_entropy, ForwardCtx, HeadInit, ModelDir, SequenceClassifier,
};
use common::{golden, golden_batch, max_abs, meta, rel_err};

const FORWARD_TOL: f32 = 1e-4;
const GRAD_TOL: f32 = 1e-3;

fn load(name: &str) -> (ModelDir, SequenceClassifier) {
    let dir = ModelDir::open(common::fixture(name).join("model")).expect("fixture opens");
    let model = SequenceClassifier::load(&dir, HeadInit::FromCheckpoint, &Device::Cpu)
        .expect("model loads");
    (dir, model)
}

fn check_forward(name: &str) {
    let g = golden(name);
    let (_, model) = load(name);
    let (out, logits) = model
        .forward(&golden_batch(&g), &ForwardCtx::eval())
        .unwrap();
    let hidden_err = max_abs(&out.hidden, &g["last_hidden_state"]);
    let logits_err = max_abs(&logits, &g["logits"]);
    println!("{name}: max abs error hidden {hidden_err:.3e}, logits {logits_err:.3e}");
    assert!(
        hidden_err <= FORWARD_TOL,
        "{name} hidden error {hidden_err}"
    );
    assert!(
        logits_err <= FORWARD_TOL,
        "{name} logits error {logits_err}"
    );
    if let Some(pooled) = g.get("pooled") {
        let err = max_abs(out.pooled.as_ref().expect("pooler output"), pooled);
        assert!(err <= FORWARD_TOL, "{name} pooled error {err}");
    }
}

/// Loss and the gradient of every parameter, against PyTorch, and the same parameter set as transformers.
fn check_grads(name: &str) {
    let g = golden(name);
    let (_, model) = load(name);
    let batch = golden_batch(&g);
    let (_, logits) = model.forward(&batch, &ForwardCtx::eval()).unwrap();
    let labels = g["labels"].to_dtype(candle_core::DType::U32).unwrap();
    let loss = cross_entropy(&logits, &labels).unwrap();
    let loss_err = max_abs(&loss.reshape(1).unwrap(), &g["loss"]);
    assert!(loss_err <= FORWARD_TOL, "{name} loss error {loss_err}");
    let grads = loss.backward().unwrap();

    let mut ours = model.encoder.vars();
    ours.extend(model.head_vars());
    let expected: Vec<String> = meta(name)["grads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut our_names: Vec<_> = ours.keys().cloned().collect();
    let mut their_names = expected.clone();
    our_names.sort();
    their_names.sort();
    assert_eq!(
        our_names, their_names,
        "{name}: parameter set differs from transformers"
    );

    let mut worst = (0f32, String::new());
    for pname in &expected {
        let var = &ours[pname];
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient for {pname}"));
        let err = rel_err(grad, &g[&format!("grad.{pname}")]);
        if err > worst.0 {
            worst = (err, pname.clone());
        }
    }
    println!(
        "{name}: loss error {loss_err:.3e}, worst gradient relative error {:.3e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= GRAD_TOL,
        "{name}: gradient of {} off by {}",
        worst.1,
        worst.0
    );
}

#[test]
fn golden_bert_tiny_forward() {
    check_forward("bert_tiny");
}

#[test]
fn golden_bert_tiny_gradients() {
    check_grads("bert_tiny");
}

#[test]
fn golden_roberta_tiny_forward() {
    check_forward("roberta_tiny");
}

#[test]
fn golden_roberta_tiny_gradients() {
    check_grads("roberta_tiny");
}

/// A 6-layer RoBERTa (DistilRoBERTa's shape), read from a legacy `pytorch_model.bin`.
#[test]
fn golden_roberta_distil_forward() {
    let (dir, _) = load("roberta_distil");
    assert!(dir.origin().ends_with("pytorch_model.bin"));
    check_forward("roberta_distil");
}

#[test]
fn golden_roberta_distil_gradients() {
    check_grads("roberta_distil");
}

/// Padding must not change the outputs of real tokens: a sequence alone equals its padded row.
#[test]
fn bert_and_roberta_padding_does_not_leak() {
    for name in ["bert_tiny", "roberta_tiny"] {
        let g = golden(name);
        let (_, model) = load(name);
        let full = golden_batch(&g);
        let (out, _) = model.forward(&full, &ForwardCtx::eval()).unwrap();
        let row = 2;
        let n = full.mask[row * full.seq_len..(row + 1) * full.seq_len]
            .iter()
            .filter(|&&m| m == 1)
            .count();
        let slice = |v: &[u32]| v[row * full.seq_len..row * full.seq_len + n].to_vec();
        let single = coldfuse_shared::Batch::new(
            slice(&full.ids),
            slice(&full.mask),
            Some(slice(&full.type_ids)),
            1,
            n,
            &Device::Cpu,
        )
        .unwrap();
        let (alone, _) = model.forward(&single, &ForwardCtx::eval()).unwrap();
        let padded: Tensor = out
            .hidden
            .narrow(0, row, 1)
            .unwrap()
            .narrow(1, 0, n)
            .unwrap();
        let err = max_abs(&alone.hidden, &padded);
        assert!(
            err <= 1e-5,
            "{name}: padding changed real-token outputs by {err}"
        );
    }
}

#[test]
fn golden_deberta_tiny_forward() {
    check_forward("deberta_tiny");
}

#[test]
fn golden_deberta_tiny_gradients() {
    check_grads("deberta_tiny");
}

#[test]
fn golden_deberta_conv_forward() {
    check_forward("deberta_conv");
}

#[test]
fn golden_deberta_conv_gradients() {
    check_grads("deberta_conv");
}
