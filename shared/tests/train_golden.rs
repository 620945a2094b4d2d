//! The trainer against PyTorch/transformers: 3 AdamW steps on the tiny BERT from the same checkpoint
//! with the same batches and hyper-parameters, dropout off (fixture `train3` of
//! scripts/golden/make_fixtures.py). Losses, gradient norms, learning rates and every final weight agree.

mod common;

use candle_core::{DType, Device};
use coldfuse_shared::{
    data::{EncodedRow, EncodedSet, LabelSpace, Target},
    model::loss::cross_entropy,
    model::Precision,
    train::{ProgressMode, RunOptions, StopReason, TrainConfig, TrainOutcome, Trainer},
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

/// The fixture's rows.
fn fixture_set() -> EncodedSet {
    let m = meta("train3");
    let rows: Vec<EncodedRow> = list(&m["rows"], ids)
        .into_iter()
        .zip(list(&m["type_ids"], ids))
        .zip(ids(&m["labels"]))
        .map(|((ids, type_ids), label)| EncodedRow {
            ids,
            type_ids,
            target: Target::Class(label),
        })
        .collect();
    EncodedSet::from_rows(rows, 0)
}

/// Our run of the fixture's 3 steps on `device` with matmuls in `precision`.
fn train3(device: &Device, precision: Precision) -> TrainOutcome {
    let m = meta("train3");
    let c = &m["config"];
    let set = fixture_set();

    let dir = ModelDir::open(common::fixture("bert_tiny").join("model")).unwrap();
    let model = SequenceClassifier::load(&dir, HeadInit::FromCheckpoint, device).unwrap();
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
        precision,
        ..TrainConfig::default()
    };
    let classes = LabelSpace::Classes(vec!["0".into(), "1".into(), "2".into()]);
    let opts = RunOptions {
        device: device.clone(),
        progress: ProgressMode::Off,
        ..RunOptions::default()
    };
    let out = Trainer::new(model, classes, cfg, opts)
        .unwrap()
        .run(&set, None)
        .unwrap();
    assert_eq!((out.stop, out.steps), (StopReason::Finished, 3));
    out
}

/// Loss on all the fixture's rows after training.
fn final_loss(out: &TrainOutcome) -> f64 {
    let set = fixture_set();
    let all: Vec<usize> = (0..set.len()).collect();
    let device = out.body.values().next().expect("a body").device().clone();
    let lb = set.batch(&all, &device).unwrap();
    let (_, logits) = out.model.forward(&lb.batch, &ForwardCtx::eval()).unwrap();
    f64::from(
        cross_entropy(&logits, &lb.targets)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
    )
}

/// The largest difference of any trained weight from the fixture's, and its name.
fn worst_weight(out: &TrainOutcome) -> (f32, String) {
    let g = golden("train3");
    let mut worst = (0f32, String::new());
    for (name, var) in out.body.iter().chain(&out.head) {
        let want = &g[&format!("final.{name}")];
        let err = max_abs(var.as_tensor(), &want.to_dtype(DType::F32).unwrap());
        if err > worst.0 {
            worst = (err, name.clone());
        }
    }
    assert_eq!(
        out.body.len() + out.head.len(),
        g.keys().filter(|k| k.starts_with("final.")).count(),
        "every parameter compared"
    );
    worst
}

/// Each step's loss (absolute) and gradient norm (relative) against PyTorch's, and its learning rate.
fn check_steps(out: &TrainOutcome, loss_tol: f64, norm_tol: f64) {
    let m = meta("train3");
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
            loss_err <= loss_tol,
            "step {} loss error {loss_err}",
            log.step
        );
        assert!(
            norm_err <= norm_tol,
            "step {} grad norm error {norm_err}",
            log.step
        );
        assert!((log.lr - want_lrs[i]).abs() < 1e-12, "step {} lr", log.step);
    }
}

#[test]
fn three_adamw_steps_match_pytorch() {
    check_f32(&Device::Cpu);
}

/// The f32 run against PyTorch's.
fn check_f32(device: &Device) {
    let m = meta("train3");
    let c = &m["config"];
    let out = train3(device, Precision::F32);

    check_steps(&out, LOSS_TOL, 1e-3);
    let want_norms = list(&m["grad_norms"], |v| v.as_f64().unwrap());
    assert!(
        want_norms
            .iter()
            .any(|&n| n > c["max_grad_norm"].as_f64().unwrap()),
        "the fixture exercises clipping"
    );

    // Loss of the trained model on all rows, and every trained weight.
    let final_loss = final_loss(&out);
    let want_final = m["final_loss"].as_f64().unwrap();
    let final_err = (final_loss - want_final).abs();
    println!(
        "loss on all rows {:.6} -> {final_loss:.6} (torch {want_final:.6}, err {final_err:.2e})",
        m["initial_loss"].as_f64().unwrap()
    );
    assert!(final_err <= LOSS_TOL, "final loss error {final_err}");
    let worst = worst_weight(&out);
    println!("worst final weight error {:.2e} ({})", worst.0, worst.1);
    assert!(worst.0 <= WEIGHT_TOL, "{} differs by {}", worst.1, worst.0);
}

/// The same 3 steps with bf16 autocast, against PyTorch's f32 run. Tolerances, from bf16's 8 significant
/// bits (unit roundoff u = 2⁻⁹ ≈ 2e-3): operands are rounded with relative error ≤ u and products
/// accumulate in f32, so a loss moves by at most about one rounding of itself (2e-3 absolute on losses
/// near 1.1; measured 4e-5) and a gradient norm by a few u (2e-2 relative; measured 4e-3). A weight's
/// AdamW update is at most about its step's learning rate whatever the gradient's scale, so where bf16
/// flips a tiny gradient's sign two runs part by at most twice the learning rates summed over the steps:
/// that bounds every weight (3e-2 here; measured 1.1e-2).
#[test]
fn three_adamw_steps_in_bf16_stay_within_bf16_rounding_of_pytorch_f32() {
    check_bf16(&Device::Cpu);
}

/// The bf16 run against PyTorch's f32 run, within the bounds above.
fn check_bf16(device: &Device) {
    let m = meta("train3");
    let out = train3(device, Precision::Bf16);
    check_steps(&out, 2e-3, 2e-2);
    let want_lrs = list(&m["lrs"], |v| v.as_f64().unwrap());
    let final_err = (final_loss(&out) - m["final_loss"].as_f64().unwrap()).abs();
    assert!(final_err <= 2e-3, "final loss error {final_err}");
    let bound = 2.0 * want_lrs.iter().sum::<f64>() as f32;
    let worst = worst_weight(&out);
    println!(
        "bf16: final loss err {final_err:.2e}, worst weight error {:.2e} ({}), bound {bound:.2e}",
        worst.0, worst.1
    );
    assert!(worst.0 <= bound, "{} differs by {}", worst.1, worst.0);
    // The run really was in bf16: its weights are not the f32 run's.
    assert!(
        worst.0 > WEIGHT_TOL,
        "bf16 gave the f32 weights ({})",
        worst.0
    );
}

/// The same checks on a CUDA GPU (`--features cuda`, scripts/gpu-check.sh): the optimiser, clipping and
/// loss on the device, f32 within the CPU's tolerances and bf16 within the bf16 bounds.
#[test]
fn three_adamw_steps_on_cuda_match_pytorch_in_f32_and_bf16() {
    let Some(device) = common::cuda() else {
        return;
    };
    check_f32(&device);
    check_bf16(&device);
}
