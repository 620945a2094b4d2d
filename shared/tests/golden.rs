//! Forward passes and gradients of our encoders against transformers' golden fixtures.

mod common;

use candle_core::{Device, Tensor};
use coldfuse_shared::{
    model::{fused::dropout, loss::cross_entropy, precision, Precision},
    ForwardCtx, HeadInit, ModelDir, SequenceClassifier,
};
use common::{
    golden, golden_batch, golden_batch_on, max_abs, meta, rel_err, rel_err_floor, GPU_NORM_FLOOR,
};

const FORWARD_TOL: f32 = 1e-4;
const GRAD_TOL: f32 = 1e-3;

const FIXTURES: [&str; 5] = [
    "bert_tiny",
    "roberta_tiny",
    "roberta_distil",
    "deberta_tiny",
    "deberta_conv",
];

fn load(name: &str) -> (ModelDir, SequenceClassifier) {
    load_on(name, &Device::Cpu)
}

fn load_on(name: &str, device: &Device) -> (ModelDir, SequenceClassifier) {
    let dir = ModelDir::open(common::fixture(name).join("model")).expect("fixture opens");
    let model =
        SequenceClassifier::load(&dir, HeadInit::FromCheckpoint, device).expect("model loads");
    (dir, model)
}

fn check_forward(name: &str) {
    check_forward_on(name, &Device::Cpu);
}

fn check_forward_on(name: &str, device: &Device) {
    let g = golden(name);
    let (_, model) = load_on(name, device);
    let (out, logits) = model
        .forward(&golden_batch_on(&g, device), &ForwardCtx::eval())
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
    check_grads_on(name, &Device::Cpu);
}

fn check_grads_on(name: &str, device: &Device) {
    let g = golden(name);
    let (_, model) = load_on(name, device);
    let batch = golden_batch_on(&g, device);
    let (_, logits) = model.forward(&batch, &ForwardCtx::eval()).unwrap();
    let labels = g["labels"]
        .to_dtype(candle_core::DType::U32)
        .unwrap()
        .to_device(device)
        .unwrap();
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
        let want = &g[&format!("grad.{pname}")];
        let err = match device.is_cuda() {
            true => rel_err_floor(grad, want, GPU_NORM_FLOOR),
            false => rel_err(grad, want),
        };
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

/// Every forward and gradient fixture on a CUDA GPU (`--features cuda`, scripts/gpu-check.sh): the
/// composed ops that run there give transformers' numbers within the CPU's tolerances.
#[test]
fn golden_fixtures_on_cuda() {
    let Some(device) = common::cuda() else {
        return;
    };
    for name in FIXTURES {
        check_forward_on(name, &device);
        check_grads_on(name, &device);
    }
}

/// A training pass with dropout on a CUDA GPU equals the CPU's, gradients included: the GPU's dropout
/// kernel draws the CPU's masks from the same seeds (the CPU runs its fused layer, the GPU composed ops).
#[test]
fn dropout_training_pass_on_cuda_equals_the_cpu() {
    let Some(device) = common::cuda() else {
        return;
    };
    for name in ["bert_tiny", "roberta_tiny", "deberta_tiny"] {
        let g = golden(name);
        let run = |dev: &Device, ctx: &ForwardCtx| {
            let (_, model) = load_on(name, dev);
            let (_, logits) = model.forward(&golden_batch_on(&g, dev), ctx).unwrap();
            let labels = g["labels"]
                .to_dtype(candle_core::DType::U32)
                .unwrap()
                .to_device(dev)
                .unwrap();
            let grads = cross_entropy(&logits, &labels).unwrap().backward().unwrap();
            let mut vars = model.encoder.vars();
            vars.extend(model.head_vars());
            let grads: Vec<(String, Tensor)> = vars
                .iter()
                .filter_map(|(n, v)| Some((n.clone(), grads.get(v.as_tensor())?.clone())))
                .collect();
            (logits, grads)
        };
        let (cpu_logits, cpu_grads) = run(&Device::Cpu, &ForwardCtx::train(7));
        let (gpu_logits, gpu_grads) = run(&device, &ForwardCtx::train(7));
        let (eval_logits, _) = run(&Device::Cpu, &ForwardCtx::train_without_dropout());
        assert!(
            max_abs(&cpu_logits, &eval_logits) > 1e-3,
            "{name}: dropout was off"
        );
        let err = max_abs(&gpu_logits, &cpu_logits);
        assert!(err <= FORWARD_TOL, "{name}: logits differ by {err}");
        assert_eq!(cpu_grads.len(), gpu_grads.len(), "{name}: gradient sets");
        for ((n, c), (_, gpu)) in cpu_grads.iter().zip(&gpu_grads) {
            let err = rel_err_floor(gpu, c, GPU_NORM_FLOOR);
            assert!(err <= GRAD_TOL, "{name}: gradient of {n} off by {err}");
        }
    }
}

/// The GPU's dropout kernel keeps exactly the CPU kernel's elements, for several seeds and rates.
#[test]
fn dropout_masks_on_cuda_equal_the_cpu_masks() {
    let Some(device) = common::cuda() else {
        return;
    };
    let ones = Tensor::ones((257, 1031), candle_core::DType::F32, &Device::Cpu).unwrap();
    for (p, seed) in [(0.1, 7), (0.5, 8), (0.9, u64::MAX)] {
        let cpu = dropout(&ones, p, seed).unwrap();
        let gpu = dropout(&ones.to_device(&device).unwrap(), p, seed).unwrap();
        let as_vec = |t: &Tensor| {
            t.to_device(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(as_vec(&gpu), as_vec(&cpu), "p {p}, seed {seed}");
    }
}

/// bf16 autocast reaches every encoder's matmuls, the CPU's fused BERT layer included (it steps aside
/// for the composed ops): hidden states move off the f32 fixture by more than the f32 tolerance, and
/// by no more than bf16 rounding through a few layers explains (5e-2 on values of order 1).
#[test]
fn bf16_autocast_reaches_every_encoder() {
    for name in FIXTURES {
        let g = golden(name);
        let (_, model) = load(name);
        let _bf16 = precision::autocast(Precision::Bf16);
        let (out, _) = model
            .forward(&golden_batch(&g), &ForwardCtx::eval())
            .unwrap();
        let err = max_abs(&out.hidden, &g["last_hidden_state"]);
        println!("{name}: bf16 hidden state error {err:.3e}");
        assert!(
            err > FORWARD_TOL,
            "{name}: bf16 gave the f32 result ({err})"
        );
        assert!(err <= 5e-2, "{name}: bf16 error {err}");
    }
}
