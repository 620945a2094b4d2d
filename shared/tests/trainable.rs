//! Every body weight trains: gradients reach all parameters, one optimiser step moves them all,
//! and dropout is on in training and off in eval. (candle-transformers' encoders fail all three.)

mod common;

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use coldfuse_shared::{
    model::loss::cross_entropy, ForwardCtx, HeadInit, ModelDir, SequenceClassifier,
};
use common::{golden, golden_batch, max_abs};

/// The attention key bias adds the same constant to every score of a row, which softmax ignores:
/// its gradient is analytically zero in transformers too (≈1e-13 there).
fn analytically_zero(name: &str) -> bool {
    name.ends_with("attention.self.key.bias")
}

fn fresh(name: &str) -> (SequenceClassifier, coldfuse_shared::Batch) {
    let dir = ModelDir::open(common::fixture(name).join("model")).unwrap();
    let model = SequenceClassifier::load(
        &dir,
        HeadInit::Fresh {
            num_labels: 2,
            seed: 7,
        },
        &Device::Cpu,
    )
    .unwrap();
    (model, golden_batch(&golden(name)))
}

fn every_parameter_trains(name: &str) {
    let (model, batch) = fresh(name);
    let labels = Tensor::new(&[0u32, 1, 1], &Device::Cpu).unwrap();
    let mut vars = model.encoder.vars();
    vars.extend(model.head_vars());
    let before: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().copy().unwrap()))
        .collect();

    let (_, logits) = model.forward(&batch, &ForwardCtx::train(3)).unwrap();
    let loss = cross_entropy(&logits, &labels).unwrap();
    let grads = loss.backward().unwrap();
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
            .unwrap()
            .sqrt();
        if !analytically_zero(pname) {
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
        let moved = max_abs(vars[&pname].as_tensor(), &old);
        if !analytically_zero(&pname) {
            assert!(
                moved > 0.0,
                "{name}: {pname} did not change after one AdamW step"
            );
        }
    }
}

#[test]
fn bert_every_parameter_gets_gradient_and_moves() {
    every_parameter_trains("bert_tiny");
}

#[test]
fn roberta_every_parameter_gets_gradient_and_moves() {
    every_parameter_trains("roberta_tiny");
}

#[test]
fn bert_and_roberta_dropout_on_in_train_off_in_eval() {
    for name in ["bert_tiny", "roberta_tiny"] {
        let (model, batch) = fresh(name);
        let run = |ctx: &ForwardCtx| model.forward(&batch, ctx).unwrap().1;
        let eval_diff = max_abs(&run(&ForwardCtx::eval()), &run(&ForwardCtx::eval()));
        assert_eq!(eval_diff, 0.0, "{name}: eval is deterministic");
        let same_seed = max_abs(&run(&ForwardCtx::train(5)), &run(&ForwardCtx::train(5)));
        assert_eq!(same_seed, 0.0, "{name}: a seed fixes the dropout masks");
        let other_seed = max_abs(&run(&ForwardCtx::train(5)), &run(&ForwardCtx::train(6)));
        assert!(
            other_seed > 1e-6,
            "{name}: dropout changes outputs in training"
        );
        let train_vs_eval = max_abs(&run(&ForwardCtx::train(5)), &run(&ForwardCtx::eval()));
        assert!(
            train_vs_eval > 1e-6,
            "{name}: dropout is active in training"
        );
    }
}

/// Optimising the body alone (head frozen at its random init) drives a batch's loss down, which only
/// happens if gradients flow through the whole encoder.
#[test]
fn bert_and_roberta_loss_falls_when_training_only_the_body() {
    for name in ["bert_tiny", "roberta_tiny"] {
        let (model, batch) = fresh(name);
        let labels = Tensor::new(&[0u32, 1, 1], &Device::Cpu).unwrap();
        let vars = model.encoder.vars();
        let params = ParamsAdamW {
            lr: 5e-3,
            ..Default::default()
        };
        let mut opt = AdamW::new(vars.values().cloned().collect(), params).unwrap();
        let loss_at = |model: &SequenceClassifier| {
            let (_, logits) = model.forward(&batch, &ForwardCtx::eval()).unwrap();
            cross_entropy(&logits, &labels)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let start = loss_at(&model);
        for step in 0..30 {
            let (_, logits) = model.forward(&batch, &ForwardCtx::train(step)).unwrap();
            opt.backward_step(&cross_entropy(&logits, &labels).unwrap())
                .unwrap();
        }
        let end = loss_at(&model);
        println!("{name}: body-only training, loss {start:.4} -> {end:.4}");
        // With the head frozen, an encoder that gets no gradient leaves this loss exactly unchanged.
        assert!(end < start * 0.95, "{name}: loss {start} -> {end}");
    }
}
