//! The held-out protocol's command-line settings: which tasks (`ProtocolArgs`, for `eval`, `demo` and
//! `gate evaluate`) and how each base is scored on them (`PlanArgs`, also for site evaluation).

use clap::Args;

use super::{tasks, HeldoutPlan};

/// How each base is scored: sizes, seeds, epochs and learning rates of the linear probe and the
/// few-shot fine-tune.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Held-out evaluation")]
pub struct PlanArgs {
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
    #[arg(long)]
    pub probe_only: bool,
}

impl PlanArgs {
    /// The plan, with the few-shot fine-tune on `few_shot_tasks` (none with `--probe-only`).
    pub fn plan(&self, few_shot_tasks: Vec<String>) -> HeldoutPlan {
        HeldoutPlan {
            train: self.heldout_examples,
            dev: self.heldout_dev,
            seeds: (0..self.seeds).collect(),
            probe_seeds: (0..self.probe_seeds).collect(),
            epochs: self.heldout_epochs,
            probe_epochs: self.probe_epochs,
            max_len: self.heldout_max_len,
            probe_lr: self.probe_lr,
            few_shot_lr: self.few_shot_lr,
            few_shot_tasks: if self.probe_only {
                Vec::new()
            } else {
                few_shot_tasks
            },
        }
    }
}

/// The held-out protocol, shared by `eval`, `demo` and `gate evaluate`: tasks and plan.
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
    /// How each base is scored.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Tasks that also get the few-shot fine-tune (repeatable; default: every held-out task, except
    /// in `demo`, where only polarity does to keep it short).
    #[arg(long = "few-shot-task", conflicts_with = "probe_only")]
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
        let few_shot_tasks: Vec<String> = if !self.few_shot_tasks.is_empty() {
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
        let plan = self.plan.plan(few_shot_tasks);
        announce(&tasks::names(&tasks), &plan);
        Ok((tasks, plan))
    }
}

/// Prints what will be scored and how.
pub fn announce(tasks: &str, plan: &HeldoutPlan) {
    println!(
        "held-out {tasks}: {} training examples, {} dev; linear probe: {} seeds, {} epochs, lr {}; \
         few-shot: {}",
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
}
