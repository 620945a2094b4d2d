//! `coldfuse eval`: how good each of several bases is as the starting point for held-out tasks (a linear
//! probe and a few-shot fine-tune over several seeds), with the gain over the first base and its 95%
//! confidence interval, as a table, JSON/CSV and a plot; `coldfuse demo` runs the same scoring on every
//! base it fused.

pub mod plot;

use std::path::{Path, PathBuf};

use clap::Args;

pub use coldfuse_contributor::heldout::{self, tasks, ProtocolArgs};
use heldout::{mean, paired_gain, BaseScores};

/// Arguments of `coldfuse eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// HF model dirs to score, in order; the first is the reference (e.g. the original model), the
    /// rest are numbered 1, 2, ... (e.g. `coldfuse pull --iteration N --out DIR`).
    #[arg(long = "base", required = true)]
    bases: Vec<PathBuf>,
    /// The held-out protocol.
    #[command(flatten)]
    protocol: ProtocolArgs,
    /// Also write results.json, results.csv, gains.png and gains.svg here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `coldfuse eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let registry = tasks::Registry::new(&args.protocol.task_files)?;
    let (tasks, plan) = args.protocol.plan(&registry, None)?;
    let bases: Vec<(u64, PathBuf)> = args
        .bases
        .iter()
        .enumerate()
        .map(|(i, dir)| (i as u64, dir.clone()))
        .collect();
    for (i, dir) in &bases {
        println!("  base {i}: {}", dir.display());
    }
    let scores = heldout::score_bases(&bases, &tasks, &plan)?;
    print_table(&scores);
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        write_results(out, &scores, &Vec::new())?;
    }
    Ok(())
}

/// The gain of each base over the task's first base, paired by seed: `(linear probe, few-shot)`, each
/// as (mean, 95% CI half-width).
pub fn gains(scores: &[BaseScores], s: &BaseScores) -> ((f64, f64), (f64, f64)) {
    let first = scores.iter().find(|f| f.task == s.task).unwrap_or(s);
    (
        paired_gain(&s.probe, &first.probe),
        paired_gain(&s.few_shot, &first.few_shot),
    )
}

/// Prints, per task and base: mean scores and the gain over the task's first base with a 95% CI.
pub fn print_table(scores: &[BaseScores]) {
    let w = scores
        .iter()
        .map(|s| s.task.len())
        .max()
        .unwrap_or(0)
        .max(9);
    println!();
    println!(
        "{:<w$}  base  linear probe  gain vs base 0        few-shot  gain vs base 0",
        "task"
    );
    for s in scores {
        let ((gp, hp), (gf, hf)) = gains(scores, s);
        let gain = |g: f64, h: f64| {
            if g.is_nan() {
                format!("{:<19}", "-")
            } else {
                format!("{g:>+6.3} ± {:<10.3}", if h.is_nan() { 0.0 } else { h })
            }
        };
        println!(
            "{:<w$}  {:>4}  {:>12}  {}  {:>8}  {}",
            s.task,
            s.iteration,
            heldout::show(mean(&s.probe)),
            gain(gp, hp),
            heldout::show(mean(&s.few_shot)),
            gain(gf, hf).trim_end()
        );
    }
}

/// Writes `results.json`, `results.csv` (one row per task, base, mode and seed) and the plot
/// `gains.png`/`gains.svg` under `root`.
pub fn write_results(
    root: &Path,
    scores: &[BaseScores],
    sites: &plot::Series,
) -> anyhow::Result<()> {
    std::fs::write(
        root.join("results.json"),
        serde_json::to_vec_pretty(scores)?,
    )?;
    let mut csv = String::from("task,iteration,mode,seed,metric,score\n");
    for s in scores {
        for (mode, values) in [("linear_probe", &s.probe), ("few_shot", &s.few_shot)] {
            for (seed, v) in values.iter().enumerate() {
                csv.push_str(&format!(
                    "{},{},{mode},{seed},{},{v}\n",
                    s.task, s.iteration, s.metric
                ));
            }
        }
    }
    std::fs::write(root.join("results.csv"), csv)?;
    plot::write(root, scores, sites)?;
    println!(
        "wrote results.json, results.csv, gains.png and gains.svg in {}",
        root.display()
    );
    Ok(())
}

/// Scores of one base on one task, for tests: accuracy, one value per seed.
#[cfg(test)]
pub(crate) fn test_scores(
    task: &str,
    iteration: u64,
    probe: &[f64],
    few_shot: &[f64],
) -> BaseScores {
    BaseScores {
        task: task.into(),
        metric: "accuracy".into(),
        iteration,
        probe: probe.to_vec(),
        few_shot: few_shot.to_vec(),
        train_examples: 100,
        dev_examples: 300,
    }
}
