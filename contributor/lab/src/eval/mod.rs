//! `coldfuse eval`: how good each of several bases is as the starting point for held-out tasks (a linear
//! probe and a few-shot fine-tune over several seeds), with the gain over the first base and its 95%
//! confidence interval, as a table, JSON/CSV and a plot; `coldfuse demo` runs the same scoring on every
//! base it fused.

pub mod heldout;
mod plot;
pub mod tasks;

use std::path::{Path, PathBuf};

use clap::Args;

use heldout::{mean, paired_gain, BaseScores, HeldoutPlan};

/// The held-out protocol, shared by `eval` and `demo`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Held-out evaluation")]
pub struct ProtocolArgs {
    /// Held-out tasks to score, by name (repeatable; default: the tasks from files when any are
    /// given, else polarity and bbc-news).
    #[arg(long = "heldout-task")]
    tasks: Vec<String>,
    /// Tasks from data files.
    #[command(flatten)]
    pub task_files: tasks::TaskArgs,
    /// Held-out training examples (few-shot size).
    #[arg(long, default_value_t = 100)]
    heldout_examples: usize,
    /// Held-out dev examples scored.
    #[arg(long, default_value_t = 300)]
    heldout_dev: usize,
    /// Seeds of the few-shot fine-tune (each draws its own training sample, head and order).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Seeds of the linear probe (cheap, so more of them: narrower confidence intervals).
    #[arg(long, default_value_t = 10)]
    probe_seeds: u64,
    /// Epochs of each few-shot fine-tune.
    #[arg(long, default_value_t = 8)]
    heldout_epochs: usize,
    /// Epochs of each linear probe (head only, on features computed once).
    #[arg(long, default_value_t = 30)]
    probe_epochs: usize,
    /// Tokens per held-out example.
    #[arg(long, default_value_t = 64)]
    heldout_max_len: usize,
    /// Linear-probe learning rate (head only, body frozen).
    #[arg(long, default_value_t = 1e-2)]
    probe_lr: f64,
    /// Few-shot fine-tune learning rate (whole model).
    #[arg(long, default_value_t = 1e-4)]
    few_shot_lr: f64,
    /// Linear probe only (no few-shot fine-tune): quick.
    #[arg(long, conflicts_with = "few_shot_tasks")]
    probe_only: bool,
    /// Tasks that also get the few-shot fine-tune (repeatable; default: every held-out task, except
    /// in `demo`, where only polarity does to keep it short).
    #[arg(long = "few-shot-task")]
    few_shot_tasks: Vec<String>,
}

impl ProtocolArgs {
    /// The tasks and the plan these arguments describe, announced on stdout; without
    /// `--few-shot-task`, the few-shot runs on `default_few_shot` (None: every task) where held out.
    pub fn plan(
        &self,
        registry: &tasks::Registry,
        default_few_shot: Option<&[&str]>,
    ) -> anyhow::Result<(Vec<tasks::Task>, HeldoutPlan)> {
        let tasks = registry.select_heldout(&self.tasks)?;
        let few_shot_tasks: Vec<String> = if self.probe_only {
            Vec::new()
        } else if !self.few_shot_tasks.is_empty() {
            for name in &self.few_shot_tasks {
                if !tasks.iter().any(|t| t.name == *name) {
                    anyhow::bail!("--few-shot-task {name} is not a held-out task of this run");
                }
            }
            self.few_shot_tasks.clone()
        } else {
            tasks
                .iter()
                .map(|t| t.name.clone())
                .filter(|n| default_few_shot.is_none_or(|d| d.contains(&n.as_str())))
                .collect()
        };
        let plan = HeldoutPlan {
            train: self.heldout_examples,
            dev: self.heldout_dev,
            seeds: (0..self.seeds).collect(),
            probe_seeds: (0..self.probe_seeds).collect(),
            epochs: self.heldout_epochs,
            probe_epochs: self.probe_epochs,
            max_len: self.heldout_max_len,
            probe_lr: self.probe_lr,
            few_shot_lr: self.few_shot_lr,
            few_shot_tasks,
        };
        println!(
            "held-out {}: {} training examples, {} dev; linear probe: {} seeds, {} epochs, lr {}; \
             few-shot: {}",
            tasks::names(&tasks),
            plan.train,
            plan.dev,
            plan.probe_seeds.len(),
            plan.probe_epochs,
            plan.probe_lr,
            if plan.few_shot_tasks.is_empty() {
                "off".into()
            } else {
                format!(
                    "{} seeds, {} epochs, lr {}, on {}",
                    plan.seeds.len(),
                    plan.epochs,
                    plan.few_shot_lr,
                    plan.few_shot_tasks.join(", ")
                )
            }
        );
        Ok((tasks, plan))
    }
}

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
        write_results(out, &scores)?;
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
    println!();
    println!("task       base  linear probe  gain vs base 0        few-shot  gain vs base 0");
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
            "{:<9}  {:>4}  {:>12}  {}  {:>8}  {}",
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
pub fn write_results(root: &Path, scores: &[BaseScores]) -> anyhow::Result<()> {
    std::fs::write(
        root.join("results.json"),
        serde_json::to_vec_pretty(scores)?,
    )?;
    let mut csv = String::from("task,iteration,mode,seed,accuracy\n");
    for s in scores {
        for (mode, values) in [("linear_probe", &s.probe), ("few_shot", &s.few_shot)] {
            for (seed, v) in values.iter().enumerate() {
                csv.push_str(&format!("{},{},{mode},{seed},{v}\n", s.task, s.iteration));
            }
        }
    }
    std::fs::write(root.join("results.csv"), csv)?;
    plot::write(root, scores)?;
    println!(
        "wrote results.json, results.csv, gains.png and gains.svg in {}",
        root.display()
    );
    Ok(())
}
