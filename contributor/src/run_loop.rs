//! `coldfuse run`: the contributor loop. Wait for a base this site has not contributed to, pull it,
//! fine-tune, submit, and repeat for N rounds (or forever); a diff that went stale while training is
//! trained again on the new base.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use anyhow::bail;
use coldfuse_shared::{
    api::{ErrorCode, RoundStatus, SigningPublicKey},
    data::TrainData,
    train::TrainConfig,
};

use crate::{
    args::{DiffArgs, JobArgs},
    client::Client,
    evaluate::SiteEvaluation,
    heldout::{tasks::Task, PlanArgs},
    login::contributor_id,
    pull::pull,
    receipt,
    settings::Settings,
    submit::{print_outcome, submit, Submitted},
    train::{print_report, train_contribution, BaseSource},
};

/// Arguments of `coldfuse run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Data, hyper-parameters, diff and contributor.
    #[command(flatten)]
    pub job: JobArgs,
    /// Rounds to contribute to (default: until stopped).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Seconds between polls while waiting for a new base.
    #[arg(long, default_value_t = 10.0)]
    pub poll_secs: f64,
    /// Where each round's contribution is kept.
    #[arg(long, default_value = "coldfuse-work")]
    pub work: PathBuf,
    /// Upload chunk size in MiB.
    #[arg(long, default_value_t = 8)]
    pub chunk_mib: u64,
    /// Also score each gated candidate against latest on this site's --dev data (never trained on)
    /// and send the gate the aggregates, as `coldfuse evaluate` does.
    #[arg(long, requires = "dev")]
    pub evaluate_candidates: bool,
    /// How candidates are scored (with --evaluate-candidates).
    #[command(flatten)]
    pub evaluation: PlanArgs,
}

/// Runs `coldfuse run`: the loop over the configured coordinator.
pub async fn run_command(args: RunArgs, settings: &Settings) -> anyhow::Result<()> {
    let client = settings.client()?;
    let job = args.job;
    let cfg = job.hyper.config()?;
    let data = job.data.load(cfg.seed)?;
    let contributor = contributor_id(job.contributor, settings, Some(&client)).await?;
    let evaluation = match (&job.data.dev, args.evaluate_candidates) {
        (Some(dev), true) => {
            let task = Task {
                name: "dev".into(),
                file: dev.clone(),
                spec: job.data.spec(),
            };
            let reports = args.work.join("reports");
            Some(SiteEvaluation::new(
                contributor.clone(),
                vec![task],
                &args.evaluation,
                reports,
            ))
        }
        (None, true) => bail!("--evaluate-candidates scores the --dev data: give --dev FILE"),
        _ => None,
    };
    let plan = LoopPlan {
        contributor,
        rounds: args.rounds,
        poll: Duration::from_secs_f64(args.poll_secs.max(0.05)),
        work: args.work,
        cache: settings.cache_dir.clone(),
        cfg,
        device: job.hyper.device,
        diff: job.diff,
        chunk: args.chunk_mib.max(1) << 20,
        receipt_key: receipt::trusted_key(&client, settings).await?,
        evaluation,
    };
    check(&plan)?;
    let done = run(&client, &data, &plan).await?;
    println!("contributed to rounds {done:?}");
    Ok(())
}

/// What the loop runs with.
#[derive(Debug, Clone)]
pub struct LoopPlan {
    /// Contributor id.
    pub contributor: String,
    /// Rounds to contribute to (`None`: until stopped).
    pub rounds: Option<usize>,
    /// Seconds between round polls while waiting.
    pub poll: Duration,
    /// Where each round's contribution is written (`round-{iteration}`).
    pub work: PathBuf,
    /// Base cache.
    pub cache: PathBuf,
    /// Hyper-parameters.
    pub cfg: TrainConfig,
    /// Training device.
    pub device: coldfuse_shared::train::DeviceChoice,
    /// Diff storage and privacy.
    pub diff: DiffArgs,
    /// Upload chunk size.
    pub chunk: u64,
    /// The coordinator's receipt key (receipts are checked against it and kept in each round's dir).
    pub receipt_key: SigningPublicKey,
    /// Site evaluation of gated candidates (`--evaluate-candidates`).
    pub evaluation: Option<SiteEvaluation>,
}

/// Runs the loop; returns the iterations contributed to.
pub async fn run(client: &Client, data: &TrainData, plan: &LoopPlan) -> anyhow::Result<Vec<u64>> {
    let mut done = Vec::new();
    let mut evaluated = BTreeSet::new();
    while plan.rounds.is_none_or(|n| done.len() < n) {
        let round = wait_for_open_round(client, plan, &mut evaluated).await?;
        keep_fused_receipts(client, plan, &done).await?;
        let pulled = pull(client, &plan.cache, Some(round.base_iteration)).await?;
        if pulled.manifest.base_sha256 != round.base_sha256 {
            continue; // the latest base moved (e.g. a rollback) between the two calls
        }
        let out = plan.work.join(format!("round-{:06}", round.iteration));
        if out.exists() {
            std::fs::remove_dir_all(&out)?;
        }
        let base = BaseSource::pulled(&pulled);
        println!(
            "round {}: training on base {} ({} examples)",
            round.iteration,
            round.base_iteration,
            data.train.len()
        );
        let (cfg, device, diff, who) = (
            plan.cfg.clone(),
            plan.device,
            plan.diff.clone(),
            plan.contributor.clone(),
        );
        let (data_c, out_c) = (data.clone(), out.clone());
        let report = tokio::task::spawn_blocking(move || {
            train_contribution(&base, &data_c, &cfg, device, &diff, &who, &out_c)
        })
        .await??;
        print_report(&report, &out);
        match submit(client, &out, plan.chunk).await {
            Ok(Submitted::Accepted(status)) => {
                receipt::keep_accepted(&out, &status, &plan.receipt_key)?;
                print_outcome(&Submitted::Accepted(status))?;
                done.push(round.iteration);
            }
            Ok(Submitted::Rejected {
                reason: ErrorCode::StaleBase | ErrorCode::RoundFusing,
                message,
            }) => {
                println!(
                    "round {}: {message}; training again on the new base",
                    round.iteration
                );
            }
            Ok(s) => print_outcome(&s)?,
            Err(e) if is_stale(&e) => {
                println!(
                    "round {}: the base moved on ({e:#}); training again",
                    round.iteration
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Fetches the fusion receipts of earlier rounds this site contributed to (a round that is open
/// again means the previous one was fused) into their round directories.
async fn keep_fused_receipts(client: &Client, plan: &LoopPlan, done: &[u64]) -> anyhow::Result<()> {
    for &iteration in done {
        let path = plan
            .work
            .join(format!("round-{iteration:06}"))
            .join(receipt::FUSED_FILE);
        if path.exists() {
            continue;
        }
        if let Some(r) = client.fused_receipt(iteration, &plan.contributor).await? {
            receipt::write_checked(&path, &r, &plan.receipt_key)?;
            println!(
                "round {iteration}: fused with weight {:.4}; receipt kept in {}",
                r.receipt.weight.unwrap_or(f64::NAN),
                path.display()
            );
        }
    }
    Ok(())
}

/// Whether a submission failed because the round moved on while training.
fn is_stale(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<crate::client::ClientError>()
            .and_then(|ce| ce.code())
            .is_some_and(|code| matches!(code, ErrorCode::StaleBase | ErrorCode::RoundFusing))
    })
}

/// Scores the gate's candidate if this site evaluates candidates and has not reported on it yet. A
/// failure is reported and not retried for that candidate, and a failed poll waits for the next:
/// contributing goes on either way.
async fn evaluate_candidate(client: &Client, plan: &LoopPlan, tried: &mut BTreeSet<u64>) {
    let Some(eval) = &plan.evaluation else {
        return;
    };
    if let Err(e) = eval.poll(client, &plan.cache, tried).await {
        tracing::warn!(error = %format!("{e:#}"), "site evaluation failed");
        println!("site evaluation failed: {e:#}");
    }
}

/// Polls until a round is open that this contributor has not been accepted into (scoring gated
/// candidates meanwhile, with `--evaluate-candidates`).
async fn wait_for_open_round(
    client: &Client,
    plan: &LoopPlan,
    evaluated: &mut BTreeSet<u64>,
) -> anyhow::Result<RoundStatus> {
    let mut announced = false;
    loop {
        evaluate_candidate(client, plan, evaluated).await;
        let round = client.round().await?;
        let mine = round.contributors.iter().any(|c| c == &plan.contributor);
        if !round.fusing && !mine {
            return Ok(round);
        }
        if !announced {
            println!(
                "round {}: {}; waiting for the next base",
                round.iteration,
                if mine {
                    "already contributed"
                } else {
                    "being fused"
                }
            );
            announced = true;
        }
        tokio::time::sleep(plan.poll).await;
    }
}

/// Checks the loop's settings before any work.
pub fn check(plan: &LoopPlan) -> anyhow::Result<()> {
    if plan.rounds == Some(0) {
        bail!("--rounds must be at least 1 (leave it out to run until stopped)");
    }
    Ok(())
}
