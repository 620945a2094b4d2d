//! `coldfuse eval`: how good each of several bases is as the starting point for a held-out task (a
//! linear probe and a few-shot fine-tune over several seeds), with the gain over the first base and its
//! 95% confidence interval; `coldfuse demo` runs the same scoring on every base it fused.

pub mod heldout;
pub mod tasks;

use std::path::{Path, PathBuf};

use clap::Args;

use heldout::{mean, paired_gain, BaseScores, HeldoutPlan};

/// Arguments of `coldfuse eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// HF model dirs to score, in order; the first is the reference (e.g. the original model), the
    /// rest are numbered 1, 2, ... (e.g. `coldfuse pull --iteration N --out DIR`).
    #[arg(long = "base", required = true)]
    bases: Vec<PathBuf>,
    /// Held-out training examples (few-shot size).
    #[arg(long, default_value_t = 100)]
    examples: usize,
    /// Held-out dev examples scored.
    #[arg(long, default_value_t = 300)]
    dev: usize,
    /// Seeds.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Epochs of each run.
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    /// Tokens per example.
    #[arg(long, default_value_t = 64)]
    max_len: usize,
    /// Linear-probe learning rate.
    #[arg(long, default_value_t = 1e-2)]
    probe_lr: f64,
    /// Few-shot fine-tune learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Also write results.json and results.csv here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `coldfuse eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let task = tasks::heldout_task()?;
    let plan = HeldoutPlan {
        train: args.examples,
        dev: args.dev,
        seeds: (0..args.seeds).collect(),
        epochs: args.epochs,
        max_len: args.max_len,
        probe_lr: args.probe_lr,
        few_shot_lr: args.lr,
    };
    println!(
        "held-out {}: {} training examples, {} dev, seeds {:?}, {} epochs, probe lr {}, few-shot lr {}",
        task.name, plan.train, plan.dev, plan.seeds, plan.epochs, plan.probe_lr, plan.few_shot_lr
    );
    let mut scores = Vec::new();
    for (i, dir) in args.bases.iter().enumerate() {
        let s = heldout::score(dir, i as u64, &task, &plan)?;
        println!(
            "  base {i} ({}): linear probe {:.3}, few-shot {:.3}",
            dir.display(),
            mean(&s.probe),
            mean(&s.few_shot)
        );
        scores.push(s);
    }
    print_table(&scores);
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        write_results(out, &scores)?;
    }
    Ok(())
}

/// Prints, per base: mean scores and the gain over iteration 0 with a 95% CI (paired by seed).
pub fn print_table(scores: &[BaseScores]) {
    let Some(first) = scores.first() else { return };
    println!();
    println!("base  linear probe  gain vs base 0        few-shot  gain vs base 0");
    for s in scores {
        let (gp, hp) = paired_gain(&s.probe, &first.probe);
        let (gf, hf) = paired_gain(&s.few_shot, &first.few_shot);
        println!(
            "{:>4}  {:>12.3}  {:>+6.3} ± {:<10.3}  {:>8.3}  {:>+6.3} ± {:.3}",
            s.iteration,
            mean(&s.probe),
            gp,
            hp,
            mean(&s.few_shot),
            gf,
            hf
        );
    }
}

/// Writes `results.json` and `results.csv` (one row per base, mode and seed) under `root`.
pub fn write_results(root: &Path, scores: &[BaseScores]) -> anyhow::Result<()> {
    std::fs::write(
        root.join("results.json"),
        serde_json::to_vec_pretty(scores)?,
    )?;
    let mut csv = String::from("iteration,mode,seed,accuracy\n");
    for s in scores {
        for (mode, values) in [("linear_probe", &s.probe), ("few_shot", &s.few_shot)] {
            for (seed, v) in values.iter().enumerate() {
                csv.push_str(&format!("{},{mode},{seed},{v}\n", s.iteration));
            }
        }
    }
    std::fs::write(root.join("results.csv"), csv)?;
    Ok(())
}
