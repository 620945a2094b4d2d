//! `coldfuse bench train`: one fine-tuning step (forward + loss + backward + clipping + AdamW over the
//! whole model, dropout on) of an HF encoder with a fresh 2-class head, in coldfuse and in PyTorch, on
//! the same shapes and thread count, in one run of alternating rounds. Ends with a JSON line.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context};
use clap::Args;
use coldfuse_shared::{
    data::{EncodedRow, EncodedSet, LabelSpace, Target},
    model::Precision,
    train::{DeviceChoice, ProgressMode, RunOptions, TrainConfig, Trainer},
    HeadInit, ModelDir, SequenceClassifier,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::python;

const TORCH_SCRIPT: &str = include_str!("../../../../scripts/bench/train_torch.py");

/// Arguments of `coldfuse bench train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// HF model dir (default: `$COLDFUSE_MINILM_DIR`, all-MiniLM-L6-v2 from scripts/assets.sh).
    #[arg(long, env = "COLDFUSE_MINILM_DIR")]
    model: Option<PathBuf>,
    /// Sequences per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Timed steps (the median is reported, after one warm-up step).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Threads for both (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Device for coldfuse and PyTorch: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Matmul precision for both: f32, or bf16 (coldfuse's autocast; `torch.autocast` with bf16).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Skip the PyTorch reference.
    #[arg(long)]
    no_pytorch: bool,
    /// Rounds of one coldfuse and one PyTorch run each (in turn first): the ratio is the median of the
    /// rounds' ratios, so that a machine whose speed drifts (a shared VM) compares each pair at
    /// about the same time.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

/// Runs the benchmark.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let model_dir = args.model.clone().context(
        "no model: pass --model DIR or `eval \"$(scripts/assets.sh)\"` for COLDFUSE_MINILM_DIR",
    )?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // candle's CPU kernels size their pool from this variable on first use.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let tokens = args.batch * args.seq;
    println!(
        "fine-tuning step on {}: batch {} × {} tokens, {threads} threads, {}, {}",
        model_dir.display(),
        args.batch,
        args.seq,
        args.device,
        args.precision
    );
    let mut ours_rounds = Vec::new();
    let mut torch_rounds = Vec::new();
    let mut version = None;
    for round in 1..=args.rounds {
        // Odd rounds run coldfuse first, even rounds PyTorch first: neither always gets the warmer
        // (or cooler) machine.
        let torch_first = round % 2 == 0 && !args.no_pytorch;
        let torch_before = match torch_first {
            true => Some(torch_step(&model_dir, &args, threads)?),
            false => None,
        };
        let ours = coldfuse_step(&model_dir, &args)?;
        println!(
            "  round {round}: coldfuse {ours:.3} s/step, {:.0} tokens/s",
            tokens as f64 / ours
        );
        ours_rounds.push(ours);
        if args.no_pytorch {
            continue;
        }
        let t = match torch_before {
            Some(t) => t,
            None => torch_step(&model_dir, &args, threads)?,
        };
        println!(
            "  round {round}: pytorch {} {:.3} s/step, {:.0} tokens/s (ratio {:.2}×)",
            t.version,
            t.seconds,
            tokens as f64 / t.seconds,
            t.seconds / ours
        );
        torch_rounds.push(t.seconds);
        version = Some(t.version);
    }
    let ours = median(ours_rounds.clone());
    let ours_tps = tokens as f64 / ours;
    let torch = (!torch_rounds.is_empty()).then(|| median(torch_rounds.clone()));
    let torch_tps = torch.map(|t| tokens as f64 / t);
    let ratios: Vec<f64> = torch_rounds
        .iter()
        .zip(&ours_rounds)
        .map(|(t, o)| t / o)
        .collect();
    let ratio = (!ratios.is_empty()).then(|| median(ratios.clone()));
    println!("  coldfuse: {ours:.3} s/step, {ours_tps:.0} tokens/s (median of rounds)");
    if let (Some(t), Some(r)) = (torch, ratio) {
        println!(
            "  pytorch: {t:.3} s/step, {:.0} tokens/s (median of rounds)",
            tokens as f64 / t
        );
        println!("  ratio coldfuse / pytorch: {r:.2}× (median of the rounds' ratios)");
    }
    let json = serde_json::json!({
        "bench": "train",
        "model": model_dir.display().to_string(),
        "batch": args.batch,
        "seq": args.seq,
        "threads": threads,
        "device": args.device.to_string(),
        "precision": args.precision.to_string(),
        "steps": args.steps,
        "rounds": args.rounds,
        "coldfuse_seconds_per_step": ours,
        "coldfuse_tokens_per_s": ours_tps,
        "coldfuse_seconds_per_round": ours_rounds,
        "pytorch_seconds_per_step": torch,
        "pytorch_tokens_per_s": torch_tps,
        "pytorch_seconds_per_round": torch_rounds,
        "pytorch_version": version,
        "round_ratios": ratios,
        "ratio": ratio,
    });
    println!("{json}");
    Ok(())
}

/// Median seconds per step of coldfuse's trainer over `steps` steps after one warm-up step (the
/// trainer times each step: forward, backward, clipping and AdamW).
fn coldfuse_step(model_dir: &std::path::Path, args: &TrainArgs) -> anyhow::Result<f64> {
    let dir = ModelDir::open(model_dir)?;
    let device = args.device.open()?;
    let mut rng = StdRng::seed_from_u64(0);
    let vocab = dir.config["vocab_size"].as_u64().unwrap_or(30000) as u32;
    let rows: Vec<EncodedRow> = (0..args.batch * (args.steps + 1))
        .map(|_| EncodedRow {
            ids: (0..args.seq)
                .map(|_| rng.random_range(1000..vocab))
                .collect(),
            type_ids: vec![0; args.seq],
            target: Target::Class(rng.random_range(0..2)),
        })
        .collect();
    let set = EncodedSet::from_rows(rows, 0);
    let labels = LabelSpace::Classes(vec!["a".into(), "b".into()]);
    let model = SequenceClassifier::load(
        &dir,
        HeadInit::Fresh {
            num_labels: 2,
            seed: 0,
        },
        &device,
    )?;
    let cfg = TrainConfig {
        batch_size: args.batch,
        grad_accumulation: 1,
        max_steps: Some(args.steps + 1),
        max_len: args.seq,
        shuffle: false,
        precision: args.precision,
        ..TrainConfig::default()
    };
    let opts = RunOptions {
        device,
        progress: ProgressMode::Off,
        ..RunOptions::default()
    };
    let outcome = Trainer::new(model, labels, cfg, opts)?.run(&set, None)?;
    let times: Vec<f64> = outcome.history.iter().skip(1).map(|s| s.seconds).collect();
    Ok(median(times))
}

/// The median of `v` (0 when empty).
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The PyTorch reference's seconds per step.
struct Torch {
    seconds: f64,
    version: String,
}

fn torch_step(model: &std::path::Path, args: &TrainArgs, threads: usize) -> anyhow::Result<Torch> {
    let python = python::torch_python()?;
    let script = python::cache_dir().join("bench-train-torch.py");
    std::fs::write(&script, TORCH_SCRIPT)?;
    let device = match args.device {
        DeviceChoice::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    let out = Command::new(&python)
        .arg(&script)
        .arg(model)
        .args([
            "--batch",
            &args.batch.to_string(),
            "--seq",
            &args.seq.to_string(),
        ])
        .args([
            "--steps",
            &args.steps.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .args(["--device", &device])
        .args(["--precision", &args.precision.to_string()])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "the PyTorch reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no JSON line from the PyTorch reference")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    Ok(Torch {
        seconds: v["seconds_per_step"].as_f64().context("seconds_per_step")?,
        version: v["torch"].as_str().unwrap_or("?").to_string(),
    })
}
