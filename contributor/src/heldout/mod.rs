//! How good a base is as a starting point for a task: a linear probe (frozen body, the paper's
//! "ColD-Frozen") and a few-shot full fine-tune, over several seeds, with paired confidence intervals.
//! The lab scores public held-out tasks with it (`eval`, `demo`, `gate evaluate`); a site scores a
//! gated candidate on its own data with it (`evaluate`), sending only the aggregates.

mod protocol;
pub mod tasks;

pub use protocol::{announce, PlanArgs, ProtocolArgs};

use std::path::{Path, PathBuf};

use candle_core::Device;
use coldfuse_shared::{
    train::{fine_tune, LinearProbe, ProgressMode, RunOptions, TrainConfig},
    ModelDir,
};

use tasks::Task;

/// Scores of one base on the held-out task.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BaseScores {
    /// Held-out task.
    pub task: String,
    /// The metric of the scores (`accuracy`, or `pearson` for a regression task).
    pub metric: String,
    /// Base iteration.
    pub iteration: u64,
    /// Dev score of the linear probe, one per seed.
    pub probe: Vec<f64>,
    /// Dev score of the few-shot fine-tune, one per seed.
    pub few_shot: Vec<f64>,
    /// Training examples each seed drew (fewer than asked on a small task).
    pub train_examples: usize,
    /// Dev examples scored.
    pub dev_examples: usize,
}

/// Settings of the held-out evaluation.
#[derive(Debug, Clone)]
pub struct HeldoutPlan {
    /// Training examples (few-shot size).
    pub train: usize,
    /// Dev examples scored.
    pub dev: usize,
    /// Seeds of the few-shot runs (data sample, head init, order).
    pub seeds: Vec<u64>,
    /// Seeds of the linear probe (cheap: the body runs once per example, so it can afford more).
    pub probe_seeds: Vec<u64>,
    /// Epochs of each few-shot run.
    pub epochs: usize,
    /// Epochs of each linear probe (head only, on cached features).
    pub probe_epochs: usize,
    /// Tokens per example.
    pub max_len: usize,
    /// Learning rate of the linear probe (head only).
    pub probe_lr: f64,
    /// Learning rate of the few-shot fine-tune (whole model).
    pub few_shot_lr: f64,
    /// The tasks that also get the few-shot fine-tune (the others: linear probe only).
    pub few_shot_tasks: Vec<String>,
}

/// Scores base `dir` (iteration `iteration`) on `task`: every seed trains on its own draw and is
/// scored on the same dev set; the linear probe runs the body over the examples once.
pub fn score(
    dir: &Path,
    iteration: u64,
    task: &Task,
    plan: &HeldoutPlan,
) -> anyhow::Result<BaseScores> {
    let model = ModelDir::open(dir)?;
    let mut out = BaseScores {
        task: task.name.clone(),
        metric: task.metric().to_string(),
        iteration,
        probe: Vec::new(),
        few_shot: Vec::new(),
        train_examples: 0,
        dev_examples: 0,
    };
    let draw_seeds = |seeds: &[u64]| -> Vec<u64> { seeds.iter().map(|s| 1000 + s).collect() };
    if !plan.probe_seeds.is_empty() {
        let draws = task.draws(plan.train, plan.dev, &draw_seeds(&plan.probe_seeds))?;
        out.dev_examples = draws.dev.len();
        out.train_examples = draws.draws.first().map_or(0, |(_, rows)| rows.len());
        let mut probe = LinearProbe::new(
            &model,
            &draws.pool,
            &draws.dev,
            draws.labels.clone(),
            plan.max_len,
            TrainConfig::default().eval_batch_size,
            &Device::Cpu,
        )?;
        for (&seed, (_, rows)) in plan.probe_seeds.iter().zip(&draws.draws) {
            let cfg = config(plan, true, seed, rows.len());
            out.probe
                .push(metric(&probe.fit(rows, &cfg)?, task.metric()));
        }
    }
    if plan.few_shot_tasks.contains(&task.name) {
        let draws = task.draws(plan.train, plan.dev, &draw_seeds(&plan.seeds))?;
        out.dev_examples = draws.dev.len();
        out.train_examples = draws.draws.first().map_or(0, |(_, rows)| rows.len());
        for (k, &seed) in plan.seeds.iter().enumerate() {
            let data = draws.data(k);
            let cfg = config(plan, false, seed, data.train.len());
            let opts = RunOptions {
                progress: ProgressMode::Off,
                ..RunOptions::default()
            };
            out.few_shot.push(metric(
                &fine_tune(&model, &data, &cfg, &opts)?.metrics,
                task.metric(),
            ));
        }
    }
    Ok(out)
}

/// The training config of one held-out run on `examples` examples, scored once, after the last step.
fn config(plan: &HeldoutPlan, probe: bool, seed: u64, examples: usize) -> TrainConfig {
    let epochs = if probe {
        plan.probe_epochs
    } else {
        plan.epochs
    };
    let batch_size = 16;
    TrainConfig {
        linear_probe: probe,
        learning_rate: if probe {
            plan.probe_lr
        } else {
            plan.few_shot_lr
        },
        batch_size,
        grad_accumulation: 1,
        epochs,
        max_len: plan.max_len,
        seed,
        warmup_ratio: 0.1,
        eval_every: Some(examples.div_ceil(batch_size) * epochs),
        ..TrainConfig::default()
    }
}

/// Metric `name` from a run's dev metrics (NaN if missing).
fn metric(metrics: &std::collections::BTreeMap<String, f64>, name: &str) -> f64 {
    metrics.get(name).copied().unwrap_or(f64::NAN)
}

/// Scores every base (iteration, dir) on every task, printing one line per base and task.
pub fn score_bases(
    bases: &[(u64, PathBuf)],
    tasks: &[Task],
    plan: &HeldoutPlan,
) -> anyhow::Result<Vec<BaseScores>> {
    let mut scores = Vec::new();
    for task in tasks {
        for (iteration, dir) in bases {
            let t = std::time::Instant::now();
            let s = score(dir, *iteration, task, plan)?;
            println!(
                "  {:<9} base {iteration}: linear probe {}, few-shot {} ({:.0} s)",
                task.name,
                show(mean(&s.probe)),
                show(mean(&s.few_shot)),
                t.elapsed().as_secs_f64()
            );
            scores.push(s);
        }
    }
    Ok(scores)
}

/// Mean and the half-width of a 95% confidence interval (t distribution) of the paired differences
/// `a[i] − b[i]`.
pub fn paired_gain(a: &[f64], b: &[f64]) -> (f64, f64) {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len() as f64;
    if d.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = d.iter().sum::<f64>() / n;
    if d.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, t95(d.len() - 1) * (var / n).sqrt())
}

/// Two-sided 95% critical value of Student's t with `df` degrees of freedom.
pub fn t95(df: usize) -> f64 {
    const T: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    T.get(df.saturating_sub(1))
        .copied()
        .unwrap_or(1.96 + 2.5 / df as f64)
}

/// The mean of `v`.
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// A score for the terminal: three decimals, or `-` when it was not measured.
pub fn show(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_gain_and_interval() {
        let (m, h) = paired_gain(&[0.8, 0.9, 0.85], &[0.7, 0.8, 0.75]);
        assert!((m - 0.1).abs() < 1e-12);
        assert!(h.abs() < 1e-9, "identical differences have no spread: {h}");
        let (m, h) = paired_gain(&[1.0, 0.0], &[0.0, 0.0]);
        assert!((m - 0.5).abs() < 1e-12);
        assert!((h - 12.706 * 0.5).abs() < 1e-9);
        assert!(paired_gain(&[], &[]).0.is_nan());
    }
}
