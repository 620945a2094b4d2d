//! `coldfuse experiment`: ColD Fusion with a configurable budget, the long form of the demo. Sites
//! are the split's contributor tasks (or disjoint shards of them), drawn per iteration, each
//! fine-tuning the latest base on a fresh sample over real HTTP against an embedded coordinator;
//! every fused base is scored on the split's held-out tasks with the held-out protocol (linear probe
//! and few-shot fine-tune, several seeds), and the mean gain over all held-out tasks is reported with
//! its 95% interval. A run directory is resumable: an interrupted run continues where it stopped
//! (contributions already accepted are not trained again, bases already scored are not scored
//! again, except base 0 and the latest scored base when they lack the few-shot fine-tune or seeds
//! now asked for), and a finished one can be extended with more `--iterations`.

mod split;
mod summary;

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context};
use clap::Args;
use coldfuse_contributor::{
    args::DiffArgs,
    heldout::{self, announce, tasks, BaseScores, PlanArgs},
    pull::pull,
    submit::{submit, Submitted},
    train::{train_contribution, BaseSource},
    Client,
};
use coldfuse_shared::{
    api::DeploymentConfig,
    diff::Encoding,
    fusion::{FusionConfig, ServerOptimizer, StrategyConfig},
    train::{DeviceChoice, TrainConfig},
};
use serde::{Deserialize, Serialize};

pub use split::{draw, sites, Site, Split};

use crate::{embedded, eval::write_results};

/// Arguments of `coldfuse experiment`.
#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// The run directory: created on the first run, resumed after (same settings; `--iterations`,
    /// `--score-every`, `--few-shot-every` and the held-out flags may change).
    #[arg(long)]
    out: PathBuf,
    /// Base model dir (default: all-MiniLM-L6-v2 from scripts/assets.sh, `$COLDFUSE_MINILM_DIR`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The split of tasks into contributor and held-out tasks (TOML: `contributors`, `heldout`).
    #[arg(long, default_value = "scripts/experiment/split.toml")]
    split: PathBuf,
    /// Only these of the split's contributor tasks (repeatable; default: all of them).
    #[arg(long = "contributor-task")]
    contributor_tasks: Vec<String>,
    /// Only these of the split's held-out tasks (repeatable; default: all of them).
    #[arg(long = "heldout-task")]
    heldout_tasks: Vec<String>,
    #[command(flatten)]
    budget: Budget,
    /// Fused iterations to run (in all, counting those of earlier runs in `--out`).
    #[arg(long, default_value_t = 5)]
    iterations: u64,
    /// Score every Nth base (and always the last; base 0 first).
    #[arg(long, default_value_t = 1)]
    score_every: u64,
    /// Few-shot fine-tune (besides the linear probe) only on base 0, every Nth base and the last
    /// among the scored ones; the others get the linear probe only. Base 0 and the latest base are
    /// scored again on resuming when they lack a mode or seeds they now need (earlier bases are
    /// not).
    #[arg(long, default_value_t = 1)]
    few_shot_every: u64,
    /// Tasks from data files (the experiment tasks: `--tasks-file $COLDFUSE_EXPERIMENT_TASKS`).
    #[command(flatten)]
    task_files: tasks::TaskArgs,
    /// How each base is scored.
    #[command(flatten)]
    plan: PlanArgs,
    /// Training device: auto, cpu, cuda.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

/// What a run trains and fuses: fixed for a run directory.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[command(next_help_heading = "Budget")]
pub struct Budget {
    /// Shards each contributor task is split into, one site each (disjoint rows).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Sites contributing per iteration, drawn reproducibly (default: every site).
    #[arg(long)]
    per_iteration: Option<usize>,
    /// Training examples per site and iteration (a fresh sample of its rows each iteration).
    #[arg(long, default_value_t = 256)]
    examples: usize,
    /// Epochs per site and iteration.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// At most this many optimiser steps per site and iteration.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Contributor learning rate (linear warmup over `--warmup-ratio` of the steps, then linear decay).
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Fraction of each contribution's steps spent warming the learning rate up.
    #[arg(long, default_value_t = 0.1)]
    warmup_ratio: f64,
    /// Batch size of the contributors.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Tokens per training example.
    #[arg(long, default_value_t = 64)]
    max_len: usize,
    /// Fusion strategy (mean is the paper's).
    #[arg(long, default_value = "mean")]
    strategy: StrategyConfig,
    /// Server optimiser over the fused update (`none` is the paper's rule; e.g. `momentum:lr=1,beta=0.9`).
    #[arg(long, default_value = "none")]
    server_optimizer: ServerOptimizer,
    /// Seed of the site draws and of every contribution's sample and training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The settings a run directory was created with (`experiment.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Settings {
    model: PathBuf,
    contributors: Vec<String>,
    heldout: Vec<String>,
    budget: Budget,
}

/// Dev rows each contribution keeps for its local dev score.
const SITE_DEV: usize = 100;

/// Runs `coldfuse experiment`.
pub fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(experiment(args))
}

async fn experiment(args: ExperimentArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let model = match &args.model {
        Some(dir) => dir.clone(),
        None => PathBuf::from(std::env::var_os("COLDFUSE_MINILM_DIR").context(
            "no model: pass --model DIR, or eval \"$(scripts/assets.sh)\" (all-MiniLM-L6-v2)",
        )?),
    };
    let split = Split::read(&args.split)?;
    let settings = Settings {
        model: model.canonicalize()?,
        contributors: subset(&split.contributors, &args.contributor_tasks, "contributor")?,
        heldout: subset(&split.heldout, &args.heldout_tasks, "held-out")?,
        budget: args.budget.clone(),
    };
    std::fs::create_dir_all(&args.out)?;
    let root = args.out.canonicalize()?;
    check_settings(&root, &settings)?;
    let registry = tasks::Registry::new(&args.task_files)?;
    let contributor_tasks = registry.select(&settings.contributors, &[])?;
    let heldout_tasks = registry.select(&settings.heldout, &[])?;
    let plan = args.plan.plan(settings.heldout.clone());
    announce(&tasks::names(&heldout_tasks), &plan);
    let budget = &settings.budget;
    let all_sites = sites(&settings.contributors, budget.shards);
    println!(
        "ColD Fusion experiment: {} sites ({} tasks × {} shards), {} per iteration, {} iterations, {} \
         examples × {} epochs at lr {}, {} + server optimiser {:?}; run directory {}",
        all_sites.len(),
        contributor_tasks.len(),
        budget.shards.max(1),
        budget.per_iteration.unwrap_or(all_sites.len()),
        args.iterations,
        budget.examples,
        budget.epochs,
        budget.lr,
        budget.strategy,
        budget.server_optimizer,
        root.display()
    );

    let defaults = DeploymentConfig::default();
    let config = DeploymentConfig {
        // The experiment fuses each round itself once its drawn sites have submitted (a rejected
        // contribution must not stall it).
        quorum: usize::MAX,
        fusion: FusionConfig {
            strategy: budget.strategy.clone(),
            ..defaults.fusion
        },
        server_optimizer: budget.server_optimizer,
        ..defaults
    };
    let coordinator = embedded::start(&root, &model, config, None).await?;
    if coordinator.resumed {
        println!("resuming the run in {}", root.display());
    }
    let admin = &coordinator.admin;
    let cache = root.join("cache");
    let scores_dir = root.join("scores");
    std::fs::create_dir_all(&scores_dir)?;
    let mut clients = std::collections::BTreeMap::new();
    for site in &all_sites {
        let token = admin.create_contributor_token(&site.id()).await?.token;
        clients.insert(site.id(), Client::new(&coordinator.url, Some(token))?);
    }

    score_if_needed(admin, &cache, &scores_dir, 0, &heldout_tasks, &plan).await?;
    let every = args.score_every.max(1);
    let few_shot_every = args.few_shot_every.max(1);
    let probe_plan = heldout::HeldoutPlan {
        few_shot_tasks: Vec::new(),
        ..plan.clone()
    };
    loop {
        let round = admin.round().await?;
        // The latest base, once (also after an interruption between its fusion and its scores).
        let latest = round.base_iteration;
        let last = latest == args.iterations;
        if latest > 0 && (latest % every == 0 || last) {
            let full = last || latest % few_shot_every == 0;
            let plan = if full { &plan } else { &probe_plan };
            score_if_needed(admin, &cache, &scores_dir, latest, &heldout_tasks, plan).await?;
        }
        let iteration = round.iteration;
        if iteration > args.iterations {
            break;
        }
        let drawn = draw(&all_sites, budget.per_iteration, budget.seed, iteration);
        for (k, site) in drawn.iter().enumerate() {
            let id = site.id();
            if round.contributors.contains(&id) {
                continue; // accepted before an interruption
            }
            let task = registry.get(&site.task)?;
            let seed = budget.seed.wrapping_mul(1_000_003) + iteration * 1000 + k as u64;
            let data =
                task.shard_sample(site.shard, site.shards, budget.examples, SITE_DEV, seed)?;
            let client = &clients[&id];
            let base = BaseSource::pulled(&pull(client, &cache, None).await?);
            let cfg = TrainConfig {
                learning_rate: budget.lr,
                warmup_ratio: budget.warmup_ratio,
                batch_size: budget.batch_size,
                grad_accumulation: 1,
                epochs: budget.epochs,
                max_steps: budget.max_steps,
                max_len: budget.max_len,
                seed,
                ..TrainConfig::default()
            };
            let out = root.join(format!("sites/{id}/iteration-{iteration}"));
            if out.exists() {
                std::fs::remove_dir_all(&out)?; // a contribution interrupted before its acceptance
            }
            let diff = DiffArgs {
                encoding: Encoding::Bf16,
                dp_clip: None,
                dp_noise: None,
            };
            let (device, name, out_c) = (args.device, id.clone(), out.clone());
            let t = Instant::now();
            let report = tokio::task::spawn_blocking(move || {
                train_contribution(&base, &data, &cfg, device, &diff, &name, &out_c)
            })
            .await??;
            let verdict = match submit(client, &out, 8 << 20).await? {
                Submitted::Accepted(_) => "accepted".to_string(),
                Submitted::Rejected { reason, .. } => format!("REJECTED ({reason})"),
            };
            std::fs::remove_dir_all(&out)?; // the store keeps the accepted diff
            println!(
                "  iteration {iteration} {id:<22} {:>4} steps in {:>6.1} s, local dev {:.3}, {verdict}",
                report.steps,
                t.elapsed().as_secs_f64(),
                report.metrics.get("accuracy").copied().unwrap_or(f64::NAN),
            );
        }
        let record = admin
            .fuse_now()
            .await
            .with_context(|| format!("fusing iteration {iteration}"))?;
        println!(
            "iteration {iteration} fused from {} contributions ({:.0} s so far)",
            record.contributions.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let scores = read_scores(&scores_dir)?;
    crate::eval::print_table(&scores);
    let rows = summary::mean_gains(&scores);
    summary::print(&rows);
    summary::write(&root, &rows)?;
    write_results(&root, &scores, &Vec::new())?;
    println!(
        "done in {:.0} s; results in {}",
        started.elapsed().as_secs_f64(),
        root.display()
    );
    Ok(())
}

/// `names` (all of `side` when empty), each of which must be on that side of the split.
fn subset(side: &[String], names: &[String], what: &str) -> anyhow::Result<Vec<String>> {
    if names.is_empty() {
        return Ok(side.to_vec());
    }
    for name in names {
        if !side.contains(name) {
            bail!(
                "{name} is not a {what} task of the split ({})",
                side.join(", ")
            );
        }
    }
    Ok(names.to_vec())
}

/// Writes the settings on a new run directory, or checks them against those it was created with.
fn check_settings(root: &Path, settings: &Settings) -> anyhow::Result<()> {
    let path = root.join("experiment.json");
    if path.exists() {
        let before: Settings = serde_json::from_slice(&std::fs::read(&path)?)
            .with_context(|| format!("{}: not an experiment's settings", path.display()))?;
        if &before != settings {
            bail!(
                "{} was started with other settings ({}); resume it with those, or choose another --out",
                root.display(),
                serde_json::to_string(&before)?
            );
        }
        return Ok(());
    }
    if root.join("store").exists() {
        bail!(
            "{} holds a run without its settings: choose another --out",
            root.display()
        );
    }
    std::fs::write(&path, serde_json::to_vec_pretty(settings)?)?;
    Ok(())
}

/// Scores base `iteration` on the held-out tasks unless its saved scores have every mode and seed
/// `plan` asks for; scoring again replaces them, keeping the modes and seeds they had.
async fn score_if_needed(
    client: &Client,
    cache: &Path,
    dir: &Path,
    iteration: u64,
    tasks: &[tasks::Task],
    plan: &heldout::HeldoutPlan,
) -> anyhow::Result<()> {
    let path = dir.join(format!("iteration-{iteration:04}.json"));
    let mut plan = plan.clone();
    if path.exists() {
        let saved = read_score_file(&path)?;
        if !lacks_scores(&saved, &plan) {
            return Ok(());
        }
        println!(
            "base {iteration} was scored with fewer seeds or modes than asked: scoring it again"
        );
        plan = keeping(&saved, plan);
    }
    let base = pull(client, cache, Some(iteration)).await?.dir;
    let t = Instant::now();
    let tasks = tasks.to_vec();
    let scores = tokio::task::spawn_blocking(move || {
        heldout::score_bases(&[(iteration, base)], &tasks, &plan)
    })
    .await??;
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&scores)?)?;
    std::fs::rename(&tmp, &path)?;
    println!(
        "base {iteration} scored on {} held-out tasks in {:.0} s",
        scores.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Whether saved scores lack what `plan` asks for: the few-shot fine-tune on one of its tasks, or
/// as many seeds of either mode.
fn lacks_scores(saved: &[BaseScores], plan: &heldout::HeldoutPlan) -> bool {
    saved.iter().any(|s| {
        s.probe.len() < plan.probe_seeds.len()
            || (plan.few_shot_tasks.contains(&s.task) && s.few_shot.len() < plan.seeds.len())
    })
}

/// `plan` widened to what saved scores have, so that scoring again loses none of them: the
/// few-shot fine-tune on every task saved with it, and at least as many seeds of each mode.
fn keeping(saved: &[BaseScores], mut plan: heldout::HeldoutPlan) -> heldout::HeldoutPlan {
    for s in saved.iter().filter(|s| !s.few_shot.is_empty()) {
        if !plan.few_shot_tasks.contains(&s.task) {
            plan.few_shot_tasks.push(s.task.clone());
        }
    }
    let most = |n: usize, of: fn(&BaseScores) -> usize| {
        (0..saved.iter().map(of).fold(n, usize::max) as u64).collect()
    };
    plan.seeds = most(plan.seeds.len(), |s| s.few_shot.len());
    plan.probe_seeds = most(plan.probe_seeds.len(), |s| s.probe.len());
    plan
}

/// Every saved score, by iteration then task.
fn read_scores(dir: &Path) -> anyhow::Result<Vec<BaseScores>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut scores = Vec::new();
    for file in files {
        scores.extend(read_score_file(&file)?);
    }
    // The table groups by task, in iteration order.
    scores.sort_by(|a, b| a.task.cmp(&b.task).then(a.iteration.cmp(&b.iteration)));
    Ok(scores)
}

/// The scores of one base, as `score_if_needed` saved them.
fn read_score_file(path: &Path) -> anyhow::Result<Vec<BaseScores>> {
    serde_json::from_slice(&std::fs::read(path)?)
        .with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::test_scores;

    fn plan(seeds: u64, probe_seeds: u64, few_shot: &[&str]) -> heldout::HeldoutPlan {
        heldout::HeldoutPlan {
            train: 100,
            dev: 300,
            seeds: (0..seeds).collect(),
            probe_seeds: (0..probe_seeds).collect(),
            epochs: 8,
            probe_epochs: 30,
            max_len: 64,
            probe_lr: 1e-2,
            few_shot_lr: 1e-4,
            few_shot_tasks: few_shot.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn saved_scores_lack_a_mode_or_seeds_the_plan_now_asks_for() {
        let saved = [
            test_scores("a", 0, &[0.5; 10], &[0.6; 3]),
            test_scores("b", 0, &[0.5; 10], &[]),
        ];
        // As saved: the few-shot on a only, 3 seeds, 10 probe seeds.
        assert!(!lacks_scores(&saved, &plan(3, 10, &["a"])));
        assert!(!lacks_scores(&saved, &plan(2, 5, &["a"])));
        assert!(!lacks_scores(&saved, &plan(3, 10, &[])));
        // The few-shot now asked for on b, more few-shot seeds, more probe seeds.
        assert!(lacks_scores(&saved, &plan(3, 10, &["a", "b"])));
        assert!(lacks_scores(&saved, &plan(6, 10, &["a"])));
        assert!(lacks_scores(&saved, &plan(3, 20, &["a"])));
        // No few-shot seeds asked for: nothing to score again.
        assert!(!lacks_scores(&saved, &plan(0, 10, &["a", "b"])));
    }

    #[test]
    fn scoring_again_keeps_the_modes_and_seeds_saved() {
        let saved = [
            test_scores("a", 6, &[0.5; 10], &[0.6; 6]),
            test_scores("b", 6, &[0.5; 10], &[]),
        ];
        // More probe seeds under a probe-only plan: a's few-shot and its 6 seeds are kept.
        let kept = keeping(&saved, plan(3, 20, &[]));
        assert_eq!(kept.few_shot_tasks, ["a"]);
        assert_eq!(kept.seeds, (0..6).collect::<Vec<u64>>());
        assert_eq!(kept.probe_seeds, (0..20).collect::<Vec<u64>>());
        // What the plan asks for beyond the saved scores stays asked for.
        let kept = keeping(&saved, plan(8, 5, &["b"]));
        assert_eq!(kept.few_shot_tasks, ["b", "a"]);
        assert_eq!(kept.seeds.len(), 8);
        assert_eq!(kept.probe_seeds.len(), 10);
        assert!(!lacks_scores(&saved, &keeping(&saved, plan(3, 10, &[]))));
    }
}
