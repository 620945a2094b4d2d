//! The experiment's headline: per scored base and mode, the mean gain over base 0 across every
//! held-out task, with a 95% interval, as a table and `summary.csv`.
//!
//! The interval is over the seeds' noise for this set of tasks: each task's gain is the mean of its
//! paired per-seed differences (candidate − base 0, same draws), with the standard error of that
//! mean; the mean gain's standard error is the root of the summed squared errors over the number of
//! tasks, times Student's t on the pooled degrees of freedom. How many tasks gained is reported
//! beside it, for the spread across tasks.

use std::{fmt::Write as _, path::Path};

use coldfuse_contributor::heldout::{t95, BaseScores};

/// One row of the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct MeanGain {
    /// The base.
    pub iteration: u64,
    /// `linear_probe` or `few_shot`.
    pub mode: &'static str,
    /// Tasks scored in that mode.
    pub tasks: usize,
    /// Tasks whose mean gain is above zero.
    pub gained: usize,
    /// Mean over tasks of each task's mean gain.
    pub gain: f64,
    /// Half-width of its 95% interval.
    pub interval: f64,
}

/// The mean gains of every base but the first, per mode, over the tasks scored in both that base
/// and base 0.
pub fn mean_gains(scores: &[BaseScores]) -> Vec<MeanGain> {
    let mut iterations: Vec<u64> = scores.iter().map(|s| s.iteration).collect();
    iterations.sort();
    iterations.dedup();
    let mut rows = Vec::new();
    for &iteration in iterations.iter().filter(|&&i| i > 0) {
        for mode in ["linear_probe", "few_shot"] {
            let values = |s: &BaseScores| match mode {
                "linear_probe" => s.probe.clone(),
                _ => s.few_shot.clone(),
            };
            let mut per_task = Vec::new();
            for s in scores.iter().filter(|s| s.iteration == iteration) {
                let Some(first) = scores.iter().find(|f| f.iteration == 0 && f.task == s.task)
                else {
                    continue;
                };
                let d: Vec<f64> = values(s)
                    .iter()
                    .zip(values(first))
                    .map(|(a, b)| a - b)
                    .collect();
                if !d.is_empty() {
                    per_task.push(d);
                }
            }
            if let Some(row) = combine(iteration, mode, &per_task) {
                rows.push(row);
            }
        }
    }
    rows
}

/// The mean gain over tasks from each task's paired differences.
fn combine(iteration: u64, mode: &'static str, per_task: &[Vec<f64>]) -> Option<MeanGain> {
    if per_task.is_empty() {
        return None;
    }
    let t = per_task.len() as f64;
    let (mut gain, mut var, mut df, mut gained) = (0.0, 0.0, 0usize, 0);
    for d in per_task {
        let n = d.len() as f64;
        let m = d.iter().sum::<f64>() / n;
        gain += m / t;
        gained += usize::from(m > 0.0);
        if d.len() > 1 {
            let v = d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
            var += v / n / (t * t);
            df += d.len() - 1;
        }
    }
    let interval = if df == 0 {
        f64::NAN
    } else {
        t95(df) * var.sqrt()
    };
    Some(MeanGain {
        iteration,
        mode,
        tasks: per_task.len(),
        gained,
        gain,
        interval,
    })
}

/// Prints the summary table.
pub fn print(rows: &[MeanGain]) {
    println!();
    println!("mean gain over the held-out tasks vs base 0 (95% interval over seeds)");
    println!("base  mode          tasks  gained  mean gain");
    for r in rows {
        let lower = r.gain - r.interval;
        println!(
            "{:>4}  {:<12}  {:>5}  {:>6}  {:>+7.4} ± {:.4}{}",
            r.iteration,
            r.mode,
            r.tasks,
            r.gained,
            r.gain,
            r.interval,
            if lower > 0.0 { "  (above zero)" } else { "" }
        );
    }
}

/// Writes `summary.csv` under `root`.
pub fn write(root: &Path, rows: &[MeanGain]) -> anyhow::Result<()> {
    let mut csv = String::from("iteration,mode,tasks,gained,mean_gain,interval95\n");
    for r in rows {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{}",
            r.iteration, r.mode, r.tasks, r.gained, r.gain, r.interval
        );
    }
    std::fs::write(root.join("summary.csv"), csv)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::test_scores;

    #[test]
    fn the_mean_gain_averages_tasks_and_pools_their_seed_errors() {
        let all = [
            test_scores("a", 0, &[0.5, 0.6], &[]),
            test_scores("b", 0, &[0.7, 0.7], &[]),
            test_scores("a", 1, &[0.6, 0.8], &[]), // gains 0.1, 0.2
            test_scores("b", 1, &[0.6, 0.7], &[]), // gains -0.1, 0.0
        ];
        let rows = mean_gains(&all);
        assert_eq!(rows.len(), 1, "no few-shot scores: one row");
        let r = &rows[0];
        assert_eq!(
            (r.iteration, r.mode, r.tasks, r.gained),
            (1, "linear_probe", 2, 1)
        );
        assert!((r.gain - 0.05).abs() < 1e-12, "{r:?}");
        // Each task: variance 0.005 over 2 seeds, so squared error 0.0025; (0.0025 + 0.0025) / 4.
        let want = t95(2) * (0.005f64 / 4.0).sqrt();
        assert!((r.interval - want).abs() < 1e-12, "{r:?}");
    }
}
