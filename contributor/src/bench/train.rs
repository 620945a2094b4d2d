//! `coldfuse bench train`: one fine-tuning step (forward + loss + backward + clipping + AdamW over the
//! whole model, dropout on) of an HF encoder with a fresh 2-class head, in coldfuse and in PyTorch, on
//! the same shapes and thread count, in one run. Ends with a JSON line.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context};
use clap::Args;
use coldfuse_shared::{
    data::{EncodedRow, EncodedSet, LabelSpace, Target},
    train::{DeviceChoice, ProgressMode, RunOptions, TrainConfig, Trainer},
    HeadInit, ModelDir, SequenceClassifier,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::python;

const TORCH_SCRIPT: &str = include_str!("../../../scripts/bench/train_torch.py");

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
    /// Skip the PyTorch reference.
    #[arg(long)]
    no_pytorch: bool,
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
        "fine-tuning step on {}: batch {} × {} tokens, {threads} threads, {}",
        model_dir.display(),
        args.batch,
        args.seq,
        args.device
    );
    let ours = coldfuse_step(&model_dir, &args)?;
    let ours_tps = tokens as f64 / ours;
    println!("  coldfuse: {ours:.3} s/step, {ours_tps:.0} tokens/s");
    let torch = if args.no_pytorch {
        None
    } else {
        let t = torch_step(&model_dir, &args, threads)?;
        println!(
            "  pytorch {}: {:.3} s/step, {:.0} tokens/s",
            t.version,
            t.seconds,
            tokens as f64 / t.seconds
        );
        Some(t)
    };
    let torch_tps = torch.as_ref().map(|t| tokens as f64 / t.seconds);
    if let Some(tps) = torch_tps {
        println!("  ratio coldfuse / pytorch: {:.2}×", ours_tps / tps);
    }
    let json = serde_json::json!({
        "bench": "train",
        "model": model_dir.display().to_string(),
        "batch": args.batch,
        "seq": args.seq,
        "threads": threads,
        "device": args.device.to_string(),
        "steps": args.steps,
        "coldfuse_seconds_per_step": ours,
        "coldfuse_tokens_per_s": ours_tps,
        "pytorch_seconds_per_step": torch.as_ref().map(|t| t.seconds),
        "pytorch_tokens_per_s": torch_tps,
        "pytorch_version": torch.as_ref().map(|t| t.version.clone()),
        "ratio": torch_tps.map(|t| ours_tps / t),
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
