//! The fine-tuning engine on the tiny fixtures: every architecture learns, resume is bit-identical,
//! linear probe leaves the body alone, early stopping stops, and bad setups are clear errors.

mod common;

use std::path::PathBuf;

use candle_core::Tensor;
use coldfuse_shared::{
    data::{
        load, Column, Columns, DataSpec, DevSource, EncodedRow, EncodedSet, LabelSpace, Target,
        TaskKind, TrainData,
    },
    train::{
        decays, evaluate, fine_tune, CheckpointOptions, EarlyStopping, LinearProbe, Metric,
        ProgressMode, RunOptions, StopReason, TrainConfig, TrainError, TrainOutcome, Trainer,
    },
    ModelDir,
};
use tempfile::TempDir;

// The fixture tokenizers are tiny (words split into characters): the label is carried by one
// punctuation token, placed anywhere among filler words.
const GOOD: [&str; 6] = ["!", "! !", "!", "!", "! !", "!"];
const BAD: [&str; 6] = ["?", "? ?", "?", "?", "? ?", "?"];
const FILLER: [&str; 8] = ["the", "movie", "was", "plot", "really", "a", "story", "and"];

/// `n` short texts whose label is given by one sentiment word among filler words.
fn sentiment_csv(dir: &TempDir, n: usize, regression: bool) -> PathBuf {
    let mut csv = String::from("text,label\n");
    for i in 0..n {
        let positive = (i * 7 + i / 3) % 2 == 0;
        let word = if positive { GOOD[i % 6] } else { BAD[i % 6] };
        let mut words: Vec<&str> = (0..(3 + i % 5)).map(|k| FILLER[(i + k * 3) % 8]).collect();
        words.insert(i % words.len(), word);
        let label = match (regression, positive) {
            (true, true) => format!("{:.2}", 0.8 + (i % 3) as f32 * 0.2),
            (true, false) => format!("{:.2}", -1.0 + (i % 4) as f32 * 0.1),
            (false, true) => "pos".into(),
            (false, false) => "neg".into(),
        };
        csv.push_str(&format!("{},{label}\n", words.join(" ")));
    }
    let path = dir.path().join("train.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn sentiment(dir: &TempDir, n: usize, task: TaskKind) -> TrainData {
    let path = sentiment_csv(dir, n, task == TaskKind::Regression);
    let spec = DataSpec {
        task,
        ..DataSpec::default()
    };
    let dev = DevSource::Split {
        fraction: 0.25,
        seed: 1,
    };
    load(&path, &dev, &spec).unwrap()
}

fn base(name: &str) -> ModelDir {
    ModelDir::open(common::fixture(name).join("model")).unwrap()
}

fn quiet() -> RunOptions {
    RunOptions {
        progress: ProgressMode::Off,
        ..RunOptions::default()
    }
}

fn tiny_config() -> TrainConfig {
    TrainConfig {
        learning_rate: 3e-3,
        warmup_ratio: 0.1,
        batch_size: 8,
        grad_accumulation: 1,
        epochs: 6,
        max_len: 24,
        ..TrainConfig::default()
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn first_and_last_loss(out: &TrainOutcome) -> (f64, f64) {
    let k = 4.min(out.history.len() / 2);
    let mean = |logs: &[coldfuse_shared::train::StepLog]| {
        logs.iter().map(|l| l.loss).sum::<f64>() / logs.len() as f64
    };
    (
        mean(&out.history[..k]),
        mean(&out.history[out.history.len() - k..]),
    )
}

fn learns(name: &str) {
    let dir = TempDir::new().unwrap();
    let data = sentiment(&dir, 96, TaskKind::Classification);
    let out = fine_tune(&base(name), &data, &tiny_config(), &quiet()).unwrap();
    let (first, last) = first_and_last_loss(&out);
    println!(
        "{name}: loss {first:.4} -> {last:.4}, dev {:?}",
        out.metrics
    );
    assert_eq!(out.stop, StopReason::Finished);
    assert_eq!(
        out.steps,
        6 * 9,
        "72 train rows / batch 8 = 9 steps per epoch"
    );
    assert_eq!(out.num_examples, 72);
    assert!(last < first * 0.8, "{name}: loss {first} -> {last}");
    assert!(out.metrics.contains_key("accuracy") && out.metrics.contains_key("mcc"));
    assert_eq!(out.evals.len(), 6, "one dev evaluation per epoch");
    let base_names: Vec<String> = base(name).tensors.keys().cloned().collect();
    for body_name in out.body.keys() {
        assert!(
            base_names.contains(body_name),
            "{name}: body var {body_name} not in the base"
        );
    }
    assert!(out.head.keys().all(|k| !out.body.contains_key(k)));
}

#[test]
fn roberta_learns() {
    learns("roberta_tiny");
}

#[test]
fn deberta_v3_style_learns() {
    learns("deberta_tiny");
}

#[test]
fn deberta_v2_conv_learns() {
    learns("deberta_conv");
}

/// BERT's tiny fixture has no tokenizer: train on token ids directly, the label given by one token.
#[test]
fn bert_learns_from_token_ids() {
    let rows: Vec<EncodedRow> = (0..64u32)
        .map(|i| {
            let label = i % 3;
            let mut ids = vec![1, 10 + label];
            ids.extend((0..(2 + i % 6)).map(|k| 20 + (i * 7 + k * 13) % 90));
            ids.push(2);
            EncodedRow {
                type_ids: vec![0; ids.len()],
                ids,
                target: Target::Class(label),
            }
        })
        .collect();
    let set = EncodedSet::from_rows(rows, 0);
    let model = common::fresh_classifier(&base("bert_tiny"), 3, 1);
    let labels = LabelSpace::Classes(vec!["a".into(), "b".into(), "c".into()]);
    let cfg = TrainConfig {
        epochs: 15,
        ..tiny_config()
    };
    let out = Trainer::new(model, labels, cfg, quiet())
        .unwrap()
        .run(&set, Some(&set))
        .unwrap();
    let (first, last) = first_and_last_loss(&out);
    println!("bert_tiny: loss {first:.4} -> {last:.4}, {:?}", out.metrics);
    assert!(last < first * 0.8, "loss {first} -> {last}");
}

#[test]
fn regression_learns() {
    let dir = TempDir::new().unwrap();
    let data = sentiment(&dir, 96, TaskKind::Regression);
    assert_eq!(data.labels, LabelSpace::Regression);
    let cfg = TrainConfig {
        epochs: 15,
        ..tiny_config()
    };
    let out = fine_tune(&base("roberta_tiny"), &data, &cfg, &quiet()).unwrap();
    let (first, last) = first_and_last_loss(&out);
    println!(
        "regression: mse {first:.4} -> {last:.4}, dev {:?}",
        out.metrics
    );
    assert!(last < first * 0.5, "mse {first} -> {last}");
    assert!(out.metrics["pearson"] > 0.5, "{:?}", out.metrics);
    assert!(out.metrics.contains_key("spearman"));
}

fn resume_config() -> TrainConfig {
    TrainConfig {
        grad_accumulation: 2,
        batch_size: 6,
        epochs: 3,
        early_stopping: Some(EarlyStopping {
            patience: 100,
            min_delta: 0.0,
            restore_best: true,
        }),
        eval_every: Some(2),
        ..tiny_config()
    }
}

/// N steps straight equal k steps, a checkpoint, a new process-like start from it, and N − k steps:
/// every weight bit for bit, and the same losses.
#[test]
fn resumed_run_is_bit_identical() {
    let dir = TempDir::new().unwrap();
    let data = sentiment(&dir, 64, TaskKind::Classification);
    let cfg = resume_config();
    let straight = fine_tune(&base("roberta_tiny"), &data, &cfg, &quiet()).unwrap();
    assert_eq!(
        straight.steps, 12,
        "48 rows / (6·2) = 4 steps per epoch, 3 epochs"
    );

    let ck_dir = dir.path().join("ck");
    let ck = CheckpointOptions {
        dir: ck_dir.clone(),
        every_steps: 4,
        resume: true,
    };
    let first = RunOptions {
        checkpoint: Some(ck.clone()),
        stop_after_steps: Some(7),
        ..quiet()
    };
    let part = fine_tune(&base("roberta_tiny"), &data, &cfg, &first).unwrap();
    assert_eq!((part.stop, part.steps), (StopReason::Interrupted, 7));
    assert!(ck_dir.join("step-00000007").is_dir());
    assert!(
        !ck_dir.join("step-00000004").exists(),
        "older checkpoints removed"
    );

    let second = RunOptions {
        checkpoint: Some(ck),
        ..quiet()
    };
    let resumed = fine_tune(&base("roberta_tiny"), &data, &cfg, &second).unwrap();
    assert_eq!(resumed.stop, StopReason::Finished);
    assert_eq!(resumed.steps, 12);
    for (name, var) in straight.body.iter().chain(&straight.head) {
        let other = resumed.body.get(name).or(resumed.head.get(name)).unwrap();
        assert_eq!(
            values(var.as_tensor()),
            values(other.as_tensor()),
            "{name} differs after resume"
        );
    }
    let losses = |o: &TrainOutcome| o.history.iter().map(|h| h.loss).collect::<Vec<_>>();
    let (a, b) = (losses(&straight), losses(&resumed));
    assert_eq!(a[7..], b[7..], "post-resume losses bit-identical");
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-12);
    }
    assert_eq!(straight.evals.len(), resumed.evals.len());
    assert_eq!(straight.metrics, resumed.metrics);

    // Another config may not continue this run.
    let other = TrainConfig {
        learning_rate: 1e-3,
        ..cfg
    };
    let err = fine_tune(&base("roberta_tiny"), &data, &other, &second).unwrap_err();
    assert!(matches!(err, TrainError::ResumeMismatch { .. }), "{err}");
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let dir = TempDir::new().unwrap();
    let data = sentiment(&dir, 40, TaskKind::Classification);
    let cfg = TrainConfig {
        epochs: 1,
        ..tiny_config()
    };
    let run = |seed| {
        let cfg = TrainConfig {
            seed,
            ..cfg.clone()
        };
        let out = fine_tune(&base("roberta_tiny"), &data, &cfg, &quiet()).unwrap();
        values(out.body["encoder.layer.0.output.dense.weight"].as_tensor())
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn linear_probe_trains_only_the_head() {
    let dir = TempDir::new().unwrap();
    let data = sentiment(&dir, 48, TaskKind::Classification);
    let cfg = TrainConfig {
        linear_probe: true,
        epochs: 2,
        ..tiny_config()
    };
    let dir_model = base("deberta_tiny");
    let out = fine_tune(&dir_model, &data, &cfg, &quiet()).unwrap();
    for (name, var) in &out.body {
        let before = values(
            &dir_model.tensors[name]
                .to_dtype(candle_core::DType::F32)
                .unwrap(),
        );
        assert_eq!(
            values(var.as_tensor()),
            before,
            "{name} moved in linear probe"
        );
    }
    let fresh = common::fresh_classifier(&dir_model, 2, cfg.seed);
    let moved = fresh
        .head_vars()
        .iter()
        .filter(|(n, v)| values(v.as_tensor()) != values(out.head[*n].as_tensor()))
        .count();
    assert_eq!(moved, out.head.len(), "every head tensor trained");
}

/// `LinearProbe` runs the body once and then fits many heads on subsets of its features: each fit must
/// score exactly as a plain linear-probe run on the same examples, whose dev evaluation (head on cached
/// dev features) must in turn agree with running the whole model over dev.
#[test]
fn linear_probe_on_cached_features_matches_a_plain_probe() {
    let dir = TempDir::new().unwrap();
    let data = sentiment(&dir, 64, TaskKind::Classification);
    let dev = data.dev.clone().unwrap();
    for name in ["roberta_tiny", "deberta_tiny"] {
        let model = base(name);
        let mut probe = LinearProbe::new(
            &model,
            &data.train,
            &dev,
            data.labels.clone(),
            24,
            16,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        for (seed, rows) in [
            (3u64, (0..data.train.len()).collect::<Vec<_>>()),
            (4, vec![5, 1, 9, 30, 2, 17, 8, 40, 11, 12]),
        ] {
            let subset = TrainData {
                train: rows.iter().map(|&i| data.train[i].clone()).collect(),
                ..data.clone()
            };
            let cfg = TrainConfig {
                linear_probe: true,
                learning_rate: 1e-2,
                epochs: 3,
                seed,
                eval_every: Some(3 * rows.len().div_ceil(8)),
                eval_batch_size: 16,
                ..tiny_config()
            };
            let cached = probe.fit(&rows, &cfg).unwrap();
            let plain = fine_tune(&model, &subset, &cfg, &quiet()).unwrap();
            for key in ["accuracy", "loss"] {
                assert!(
                    (cached[key] - plain.metrics[key]).abs() < 1e-6,
                    "{name} seed {seed} {key}: cached {} vs plain {}",
                    cached[key],
                    plain.metrics[key]
                );
            }
            let tokenizer = coldfuse_shared::TextTokenizer::from_dir(&model.path, 24).unwrap();
            let dev_set = EncodedSet::encode(&dev, &tokenizer).unwrap();
            let full = evaluate(
                &plain.model,
                &dev_set,
                &data.labels,
                16,
                &candle_core::Device::Cpu,
            )
            .unwrap();
            assert!(
                (full.metrics["loss"] - plain.metrics["loss"]).abs() < 1e-5,
                "{name}: head on cached dev features {} vs the whole model {}",
                plain.metrics["loss"],
                full.metrics["loss"]
            );
            assert_eq!(full.metrics["accuracy"], plain.metrics["accuracy"]);
        }
    }
}

#[test]
fn body_features_are_refused_when_the_body_trains() {
    let dir = TempDir::new().unwrap();
    let data = sentiment(&dir, 16, TaskKind::Classification);
    let model = base("roberta_tiny");
    let mut probe = LinearProbe::new(
        &model,
        &data.train,
        data.dev.as_deref().unwrap(),
        data.labels.clone(),
        24,
        16,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let err = probe.fit(&[0, 1], &tiny_config()).unwrap_err();
    assert!(err.to_string().contains("linear-probe"), "{err}");
    let err = probe
        .fit(
            &[0, 99],
            &TrainConfig {
                linear_probe: true,
                ..tiny_config()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("99"), "{err}");
}

/// The linear probe caches only the first position and the pooled output of the frozen body: every
/// architecture's head must give the same logits from those alone as from the whole sequence.
#[test]
fn heads_read_only_the_first_position() {
    use coldfuse_shared::model::{BodyOutput, ForwardCtx};
    for name in ["roberta_tiny", "deberta_tiny", "deberta_conv", "bert_tiny"] {
        let rows: Vec<EncodedRow> = (0..6u32)
            .map(|i| {
                let ids: Vec<u32> = (0..(3 + i)).map(|k| 5 + (i * 11 + k * 7) % 90).collect();
                EncodedRow {
                    type_ids: vec![0; ids.len()],
                    ids,
                    target: Target::Class(i % 2),
                }
            })
            .collect();
        let set = EncodedSet::from_rows(rows, 0);
        let lb = set
            .batch(&[0, 1, 2, 3, 4, 5], &candle_core::Device::Cpu)
            .unwrap();
        let model = common::fresh_classifier(&base(name), 2, 3);
        let ctx = ForwardCtx::eval();
        let (out, logits) = model.forward(&lb.batch, &ctx).unwrap();
        assert!(out.hidden.dim(1).unwrap() > 1);
        let first = BodyOutput {
            hidden: out.hidden.narrow(1, 0, 1).unwrap(),
            pooled: out.pooled.clone(),
        };
        let from_first = model.forward_head(&first, &ctx).unwrap();
        assert_eq!(values(&logits), values(&from_first), "{name}");
    }
}

#[test]
fn early_stopping_stops_and_restores_the_best() {
    let dir = TempDir::new().unwrap();
    let data = sentiment(&dir, 48, TaskKind::Classification);
    // No later evaluation can beat the first by 10: stop after `patience` more.
    let cfg = TrainConfig {
        epochs: 20,
        metric: Some(Metric::Loss),
        early_stopping: Some(EarlyStopping {
            patience: 2,
            min_delta: 10.0,
            restore_best: true,
        }),
        ..tiny_config()
    };
    let out = fine_tune(&base("roberta_tiny"), &data, &cfg, &quiet()).unwrap();
    assert_eq!(out.stop, StopReason::EarlyStopped);
    assert_eq!(out.evals.len(), 3);
    assert_eq!(out.steps, 3 * 5, "36 rows / batch 8 = 5 steps per epoch");
    assert_eq!(
        out.metrics["loss"], out.evals[0].metrics["loss"],
        "best metrics reported"
    );
}

#[test]
fn max_steps_overrides_epochs() {
    let dir = TempDir::new().unwrap();
    let data = sentiment(&dir, 24, TaskKind::Classification);
    let cfg = TrainConfig {
        max_steps: Some(7),
        epochs: 1,
        ..tiny_config()
    };
    let out = fine_tune(&base("roberta_tiny"), &data, &cfg, &quiet()).unwrap();
    assert_eq!(out.steps, 7);
    let epochs: Vec<usize> = out.history.iter().map(|h| h.epoch).collect();
    assert_eq!(
        epochs,
        [0, 0, 0, 1, 1, 1, 2],
        "18 rows / batch 8 = 3 steps per epoch"
    );
    let lr: Vec<f64> = out.history.iter().map(|h| h.lr).collect();
    assert_eq!(lr[0], 0.0, "warmup starts at 0");
    assert!(lr[1] > lr[6] && lr[6] > 0.0, "then decays linearly: {lr:?}");
}

#[test]
fn setup_errors_are_clear() {
    let dir = TempDir::new().unwrap();
    let data = sentiment(&dir, 24, TaskKind::Classification);
    let no_dev = TrainData {
        dev: None,
        ..data.clone()
    };
    let cfg = TrainConfig {
        early_stopping: Some(EarlyStopping::default()),
        ..tiny_config()
    };
    let err = fine_tune(&base("roberta_tiny"), &no_dev, &cfg, &quiet()).unwrap_err();
    assert!(
        err.to_string().contains("early stopping needs a dev set"),
        "{err}"
    );

    let model = common::fresh_classifier(&base("roberta_tiny"), 3, 0);
    let err = Trainer::new(model, data.labels.clone(), tiny_config(), quiet()).unwrap_err();
    assert!(matches!(err, TrainError::Config(_)), "{err}");

    let bad = TrainConfig {
        learning_rate: f64::NAN,
        ..tiny_config()
    };
    assert!(matches!(
        fine_tune(&base("roberta_tiny"), &data, &bad, &quiet()),
        Err(TrainError::Config(_))
    ));
}

/// Weight decay skips exactly the biases and LayerNorm weights of real parameter sets.
#[test]
fn weight_decay_rule_on_every_architecture() {
    for name in ["bert_tiny", "roberta_tiny", "deberta_tiny", "deberta_conv"] {
        let model = common::fresh_classifier(&base(name), 2, 0);
        let mut vars = model.encoder.vars();
        vars.extend(model.head_vars());
        for (pname, var) in &vars {
            let is_norm = pname.contains("LayerNorm.");
            let is_bias = pname.ends_with(".bias");
            assert_eq!(decays(pname), !(is_norm || is_bias), "{name}: {pname}");
            if is_norm || is_bias {
                assert_eq!(var.dims().len(), 1, "{name}: {pname} is a vector");
            }
        }
    }
}

/// Pair inputs (columns mapped by name) go through the whole engine.
#[test]
fn text_pairs_train() {
    let dir = TempDir::new().unwrap();
    let mut jsonl = String::new();
    for i in 0..32 {
        let same = i % 2 == 0;
        let a = GOOD[i % 6];
        let b = if same { GOOD[(i + 1) % 6] } else { BAD[i % 6] };
        jsonl.push_str(&format!(
            "{{\"a\": \"the movie {a}\", \"b\": \"a story {b}\", \"y\": {}}}\n",
            u8::from(same)
        ));
    }
    let path = dir.path().join("pairs.jsonl");
    std::fs::write(&path, jsonl).unwrap();
    let spec = DataSpec {
        columns: Columns {
            text: Column::name("a"),
            text_pair: Some(Column::name("b")),
            label: Column::name("y"),
        },
        ..DataSpec::default()
    };
    let data = load(&path, &DevSource::None, &spec).unwrap();
    let cfg = TrainConfig {
        epochs: 2,
        ..tiny_config()
    };
    let out = fine_tune(&base("deberta_conv"), &data, &cfg, &quiet()).unwrap();
    assert_eq!(out.steps, 8);
    assert!(out.metrics.contains_key("train_loss"));
    assert!(out.evals.is_empty(), "no dev set, no evaluation");
}
