//! The trainer against PyTorch/transformers: 3 AdamW steps on the tiny BERT from the same checkpoint
//! with the same batches and hyper-parameters, dropout off (fixture `train3` of
//! scripts/golden/make_fixtures.py). Losses, gradient norms, learning rates and every final weight agree.

mod common;

use candle_core::{DType, Device};
use coldfuse_shared::{
    data::{EncodedRow, EncodedSet, LabelSpace, Target},
    model::loss::cross_entropy,
    train::{ProgressMode, RunOptions, StopReason, TrainConfig, Trainer},
    ForwardCtx, HeadInit, ModelDir, SequenceClassifier,
};
use common::{golden, max_abs, meta};

const LOSS_TOL: f64 = 1e-4;
const WEIGHT_TOL: f32 = 1e-4;

fn list<T>(v: &serde_json::Value, f: impl Fn(&serde_json::Value) -> T) -> Vec<T> {
    v.as_array().unwrap().iter().map(f).collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    list(v, |x| x.as_u64().unwrap() as u32)
}

#[test]
fn three_adamw_steps_match_pytorch() {
    let m = meta("train3");
    let c = &m["config"];
    let labels: Vec<u32> = ids(&m["labels"]);
    let rows: Vec<EncodedRow> = list(&m["rows"], ids)
        .into_iter()
        .zip(list(&m["type_ids"], ids))
        .zip(&labels)
        .map(|((ids, type_ids), &label)| EncodedRow {
            ids,
            type_ids,
            target: Target::Class(label),
        })
        .collect();
    let set = EncodedSet::from_rows(rows, 0);

    let dir = ModelDir::open(common::fixture("bert_tiny").join("model")).unwrap();
    let model = SequenceClassifier::load(&dir, HeadInit::FromCheckpoint, &Device::Cpu).unwrap();
    let cfg = TrainConfig {
        learning_rate: c["lr"].as_f64().unwrap(),
        weight_decay: c["weight_decay"].as_f64().unwrap(),
        adam_beta1: c["betas"][0].as_f64().unwrap(),
        adam_beta2: c["betas"][1].as_f64().unwrap(),
        adam_epsilon: c["eps"].as_f64().unwrap(),
        warmup_steps: Some(c["warmup_steps"].as_u64().unwrap() as usize),
        max_grad_norm: c["max_grad_norm"].as_f64(),
        batch_size: c["batch_size"].as_u64().unwrap() as usize,
        grad_accumulation: c["grad_accumulation"].as_u64().unwrap() as usize,
        epochs: 1,
        dropout: false,
        shuffle: false,
        ..TrainConfig::default()
    };
    let classes = LabelSpace::Classes(vec!["0".into(), "1".into(), "2".into()]);
    let opts = RunOptions {
        progress: ProgressMode::Off,
        ..RunOptions::default()
    };
    let out = Trainer::new(model, classes, cfg, opts)
        .unwrap()
        .run(&set, None)
        .unwrap();
    assert_eq!((out.stop, out.steps), (StopReason::Finished, 3));

    let want_losses = list(&m["losses"], |v| v.as_f64().unwrap());
    let want_norms = list(&m["grad_norms"], |v| v.as_f64().unwrap());
    let want_lrs = list(&m["lrs"], |v| v.as_f64().unwrap());
    for (i, log) in out.history.iter().enumerate() {
        let loss_err = (log.loss - want_losses[i]).abs();
        let norm_err = (log.grad_norm - want_norms[i]).abs() / want_norms[i];
        println!(
            "step {}: loss {:.6} (torch {:.6}, err {loss_err:.2e}), grad norm {:.5} (rel err {norm_err:.2e}), lr {}",
            log.step, log.loss, want_losses[i], log.grad_norm, log.lr
        );
        assert!(
            loss_err <= LOSS_TOL,
            "step {} loss error {loss_err}",
            log.step
        );
        assert!(
            norm_err <= 1e-3,
            "step {} grad norm error {norm_err}",
            log.step
        );
        assert!((log.lr - want_lrs[i]).abs() < 1e-12, "step {} lr", log.step);
    }
    assert!(
        want_norms
            .iter()
            .any(|&n| n > c["max_grad_norm"].as_f64().unwrap()),
        "the fixture exercises clipping"
    );

    // Loss of the trained model on all rows, and every trained weight.
    let all: Vec<usize> = (0..set.len()).collect();
    let lb = set.batch(&all, &Device::Cpu).unwrap();
    let (_, logits) = out.model.forward(&lb.batch, &ForwardCtx::eval()).unwrap();
    let final_loss = f64::from(
        cross_entropy(&logits, &lb.targets)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
    );
    let want_final = m["final_loss"].as_f64().unwrap();
    let final_err = (final_loss - want_final).abs();
    println!(
        "loss on all rows {:.6} -> {final_loss:.6} (torch {want_final:.6}, err {final_err:.2e})",
        m["initial_loss"].as_f64().unwrap()
    );
    assert!(final_err <= LOSS_TOL, "final loss error {final_err}");

    let g = golden("train3");
    let mut worst = (0f32, String::new());
    for (name, var) in out.body.iter().chain(&out.head) {
        let want = &g[&format!("final.{name}")];
        let err = max_abs(var.as_tensor(), &want.to_dtype(DType::F32).unwrap());
        if err > worst.0 {
            worst = (err, name.clone());
        }
    }
    println!("worst final weight error {:.2e} ({})", worst.0, worst.1);
    assert_eq!(
        out.body.len() + out.head.len(),
        g.keys().filter(|k| k.starts_with("final.")).count(),
        "every parameter compared"
    );
    assert!(worst.0 <= WEIGHT_TOL, "{} differs by {}", worst.1, worst.0);
}
