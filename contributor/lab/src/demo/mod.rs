//! `coldfuse demo`: ColD Fusion end to end on one machine. An embedded coordinator on a local-directory
//! store, several contributors (three by default) fine-tuning the shared base on their own real tasks
//! over real HTTP, several fused iterations, each candidate scored by the contributing sites on rows
//! they never train on (site evaluation; the gate promotes or holds it), then every promoted base
//! scored on held-out tasks (linear probe and few-shot fine-tune, several seeds) against iteration 0.

mod attack;
mod sites;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use coldfuse_shared::{
    api::{DeploymentConfig, GateConfig, PromotionState, RoundStatus, SiteGate, SiteRule},
    diff::Encoding,
    fusion::{FusionConfig, StrategyConfig},
    train::{DeviceChoice, TrainConfig},
};

use coldfuse_contributor::{
    args::DiffArgs,
    evaluate::SiteEvaluation,
    pull::pull,
    submit::{submit, Submitted},
    train::{train_contribution, BaseSource},
    Client,
};

use crate::{
    embedded,
    eval::{heldout, print_table, tasks, write_results, ProtocolArgs},
};

/// Held-out tasks that get the few-shot fine-tune in the demo unless `--few-shot-task` says otherwise:
/// it costs minutes per base, so the others get the linear probe only to keep the demo short.
const DEMO_FEW_SHOT: [&str; 1] = ["polarity"];

/// The model scripts/assets.sh installs and `$COLDFUSE_MINILM_DIR` names.
const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Arguments of `coldfuse demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Base model dir (default: all-MiniLM-L6-v2 from scripts/assets.sh, `$COLDFUSE_MINILM_DIR`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The base model's name in the lineage and model cards (default: `--model`'s dir name, or
    /// sentence-transformers/all-MiniLM-L6-v2 for the default model).
    #[arg(long)]
    model_name: Option<String>,
    /// Fused iterations to run.
    #[arg(long, default_value_t = 3)]
    iterations: u64,
    /// Training examples per contributor and iteration.
    #[arg(long, default_value_t = 256)]
    examples: usize,
    /// Epochs per contributor and iteration.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Tokens per example.
    #[arg(long, default_value_t = 64)]
    max_len: usize,
    /// Contributor learning rate.
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Contributor tasks, one contributor each (repeatable; default: sms-spam, hedge, email-spam;
    /// also known: bbc-news, polarity, when not held out).
    #[arg(long = "contributor-task")]
    contributor_tasks: Vec<String>,
    /// The held-out protocol.
    #[command(flatten)]
    protocol: ProtocolArgs,
    /// Fusion strategy (mean is the paper's).
    #[arg(long, default_value = "mean")]
    strategy: StrategyConfig,
    /// Training device: auto, cpu, cuda.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Where the run is written (a new subdirectory per run).
    #[arg(long, default_value = "coldfuse-demo")]
    out: PathBuf,
    /// Adds an attacker site that uploads, each round, the first site's diff times K (repeatable,
    /// e.g. `--attack 100 --attack 1e20`); rounds are then fused by the admin once all have submitted.
    #[arg(long = "attack", value_name = "K")]
    attacks: Vec<f32>,
    /// Turns the deployment's poisoning defences off (no norm bound, no clip to the median), to
    /// measure what they prevent.
    #[arg(long)]
    no_defences: bool,
    /// No site evaluation: every fused base becomes latest at once (no gate).
    #[arg(long)]
    no_site_evaluation: bool,
}

/// The demo gate's tolerance: a candidate is held when the median site's lower 95% bound of the gain
/// is below −0.02.
const SITE_TOLERANCE: f64 = 0.02;

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (model, model_name) = match &args.model {
        Some(dir) => (dir.clone(), args.model_name.clone()),
        None => {
            let dir = std::env::var_os("COLDFUSE_MINILM_DIR").context(
                "no model: pass --model DIR, or run scripts/demo.sh (it installs all-MiniLM-L6-v2)",
            )?;
            let name = args.model_name.clone().unwrap_or(DEFAULT_MODEL.into());
            (PathBuf::from(dir), Some(name))
        }
    };
    let registry = tasks::Registry::new(&args.protocol.task_files)?;
    let contributors = registry.select(&args.contributor_tasks, &tasks::DEFAULT_CONTRIBUTORS)?;
    let (heldout_tasks, plan) = args.protocol.plan(&registry, Some(&DEMO_FEW_SHOT))?;
    tasks::check_disjoint(&contributors, &heldout_tasks)?;
    let root = args
        .out
        .join(format!("run-{}", coldfuse_shared::api::now_unix()));
    std::fs::create_dir_all(&root)?;
    println!(
        "ColD Fusion demo: {} contributors ({}) × {} iterations on {}; held-out tasks: {}",
        contributors.len(),
        tasks::names(&contributors),
        args.iterations,
        model.display(),
        tasks::names(&heldout_tasks)
    );
    println!("run directory: {}", root.display());

    // The coordinator, embedded, on a local-directory store.
    let defaults = DeploymentConfig::default();
    let config = DeploymentConfig {
        // With attackers, a rejected one would never complete a quorum: the admin fuses instead.
        quorum: if args.attacks.is_empty() {
            contributors.len()
        } else {
            usize::MAX
        },
        fusion: FusionConfig {
            strategy: args.strategy.clone(),
            ..defaults.fusion
        },
        max_relative_norm: defaults.max_relative_norm.filter(|_| !args.no_defences),
        exclude_above_median: defaults.exclude_above_median.filter(|_| !args.no_defences),
        gate: (!args.no_site_evaluation).then_some(GateConfig {
            tolerance: SITE_TOLERANCE,
            min_evals: 0,
            sites: Some(SiteGate {
                min_reports: contributors.len(),
                deadline_secs: 3600,
                rule: SiteRule::Median,
            }),
        }),
        ..DeploymentConfig::default()
    };
    let coordinator = embedded::start(&root, &model, config, model_name).await?;
    let (url, admin) = (coordinator.url, coordinator.admin);
    println!("coordinator listening on {url}");

    // Each site trains on its sample, checks its local dev accuracy on 200 other rows, and keeps up
    // to SITE_EVAL_ROWS more, never trained on, to score candidates with (probe only, to stay short).
    let site_plan = args.protocol.plan.plan(Vec::new());
    let mut sites = Vec::new();
    let mut evaluations = Vec::new();
    for (i, task) in contributors.iter().enumerate() {
        let token = admin.create_contributor_token(&task.name).await?.token;
        let mut data = task.sample(args.examples, 200 + sites::SITE_EVAL_ROWS, i as u64)?;
        let mut dev = data.dev.take().unwrap_or_default();
        let held_back = dev.split_off((dev.len() / 3).min(200));
        data.dev = Some(dev);
        let dir = root.join(format!("sites/{}", task.name));
        evaluations.push(SiteEvaluation {
            contributor: task.name.clone(),
            tasks: vec![sites::private_task(
                &dir,
                &task.name,
                &held_back,
                &data.labels,
            )?],
            plan: site_plan.clone(),
            reports: dir.join("reports"),
        });
        sites.push((task, Client::new(&url, Some(token))?, data));
    }
    let mut promoted = vec![0];
    let mut decisions = Vec::new();
    let mut site_gains = Vec::new();
    let cache = root.join("cache");
    let diff = DiffArgs {
        encoding: Encoding::Bf16,
        dp_clip: None,
        dp_noise: None,
    };
    for iteration in 1..=args.iterations {
        for (i, (task, client, data)) in sites.iter().enumerate() {
            let base = BaseSource::pulled(&pull(client, &cache, None).await?);
            let cfg = TrainConfig {
                learning_rate: args.lr,
                batch_size: 16,
                grad_accumulation: 1,
                epochs: args.epochs,
                max_len: args.max_len,
                seed: iteration * 100 + i as u64,
                ..TrainConfig::default()
            };
            let out = root.join(format!("sites/{}/iteration-{iteration}", task.name));
            let (data, diff, device, name, out_c) = (
                data.clone(),
                diff.clone(),
                args.device,
                task.name.clone(),
                out.clone(),
            );
            let t = Instant::now();
            let report = tokio::task::spawn_blocking(move || {
                train_contribution(&base, &data, &cfg, device, &diff, &name, &out_c)
            })
            .await??;
            let verdict = submit(client, &out, 8 << 20).await?;
            let accepted = matches!(verdict, Submitted::Accepted(_));
            println!(
                "  iteration {iteration} {:<11} {} steps in {:>5.1} s, local dev accuracy {:.3}, diff {}",
                task.name,
                report.steps,
                t.elapsed().as_secs_f64(),
                report.metrics.get("accuracy").copied().unwrap_or(f64::NAN),
                if accepted { "accepted" } else { "REJECTED" }
            );
        }
        for (k, &scale) in args.attacks.iter().enumerate() {
            let id = format!("attacker-{}", k + 1);
            let token = admin.create_contributor_token(&id).await?.token;
            let client = Client::new(&url, Some(token))?;
            let pulled = pull(&client, &cache, None).await?;
            let honest = root.join(format!("sites/{}/iteration-{iteration}", sites[0].0.name));
            let out = root.join(format!("sites/{id}/iteration-{iteration}"));
            let (base_dir, o) = (pulled.dir.clone(), out.clone());
            tokio::task::spawn_blocking(move || {
                attack::scaled_copy(&base_dir, &honest, scale, &id, &o)
            })
            .await??;
            let verdict = match submit(&client, &out, 8 << 20).await? {
                Submitted::Accepted(_) => "accepted".to_string(),
                Submitted::Rejected { reason, .. } => format!("REJECTED ({reason})"),
            };
            println!("  iteration {iteration} attacker ×{scale:e}: {verdict}");
        }
        if !args.attacks.is_empty() {
            admin.fuse_now().await?;
        }
        if !args.no_site_evaluation {
            let evaluators: Vec<_> = evaluations
                .iter()
                .zip(&sites)
                .map(|(e, s)| (e, &s.1))
                .collect();
            let (p, gains) = sites::evaluate(&evaluators, &admin, &cache, iteration).await?;
            decisions.push((iteration, p.state));
            site_gains.extend(gains);
            if p.state != PromotionState::Promoted {
                println!(
                    "iteration {iteration} fused, {:?} ({:.0} s so far)",
                    p.state,
                    started.elapsed().as_secs_f64()
                );
                continue;
            }
        }
        let round = wait_for_base(&sites[0].1, iteration).await?;
        promoted.push(iteration);
        println!(
            "iteration {iteration} fused and published (base {}), {:.0} s so far",
            &round.base_sha256[..12],
            started.elapsed().as_secs_f64()
        );
    }

    // Every base, original and fused, as the starting point for tasks that never contributed.
    let client = &sites[0].1;
    let mut bases = Vec::new();
    for &iteration in &promoted {
        bases.push((iteration, pull(client, &cache, Some(iteration)).await?.dir));
    }
    let scores =
        tokio::task::spawn_blocking(move || heldout::score_bases(&bases, &heldout_tasks, &plan))
            .await??;
    print_table(&scores);
    if !decisions.is_empty() {
        sites::print_panel(&site_gains, &decisions);
        sites::write_csv(&root, &site_gains)?;
    }
    write_results(&root, &scores, &sites::series(&site_gains))?;
    println!(
        "done in {:.0} s; results in {}",
        started.elapsed().as_secs_f64(),
        root.display()
    );
    Ok(())
}

/// Waits until base `iteration` is the latest.
async fn wait_for_base(client: &Client, iteration: u64) -> anyhow::Result<RoundStatus> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let round = client.round().await?;
        if round.base_iteration >= iteration {
            return Ok(round);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "iteration {iteration} was not fused in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
