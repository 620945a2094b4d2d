//! `coldfuse gate`: the operator's side of the promotion gate. `evaluate` is the evaluator: it scores
//! each fused candidate against the current latest on public held-out tasks (linear probe, and
//! few-shot unless `--probe-only`) and reports to the coordinator, which promotes the candidate or
//! holds it; `promote` / `discard` decide by hand; `status` shows where the gate stands.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use anyhow::Context;
use coldfuse_shared::api::{EvalMethod, GateEval, Promotion, PromotionState};
use serde::Deserialize;

use crate::{
    client::Client,
    eval::{heldout, ProtocolArgs},
    pull::pull,
};

/// `coldfuse gate ...` (needs an admin token, except `status`).
#[derive(Debug, clap::Subcommand)]
pub enum GateCommand {
    /// Show the gate's settings and the candidate awaiting it, with its evals.
    Status,
    /// Score each candidate against latest on held-out tasks and report to the coordinator.
    Evaluate(EvaluateArgs),
    /// Make a candidate `latest` by hand.
    Promote {
        /// The candidate iteration.
        iteration: u64,
        /// Why (recorded in the gate record and the card).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Never make a candidate `latest`.
    Discard {
        /// The candidate iteration.
        iteration: u64,
        /// Why (recorded in the gate record).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Arguments of `coldfuse gate evaluate`.
#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// The held-out protocol (tasks, sizes, seeds).
    #[command(flatten)]
    protocol: ProtocolArgs,
    /// Evaluate the current candidate (if any) and exit, instead of waiting for candidates.
    #[arg(long)]
    once: bool,
    /// Seconds between polls while waiting.
    #[arg(long, default_value_t = 30.0)]
    poll_secs: f64,
}

/// `GET /v1/gate` as the CLI reads it.
#[derive(Debug, Deserialize)]
struct GateStatus {
    gate: Option<serde_json::Value>,
    candidate: Option<Promotion>,
    latest: u64,
}

/// Runs a gate command.
pub async fn run(command: GateCommand, client: &Client, cache: PathBuf) -> anyhow::Result<()> {
    match command {
        GateCommand::Status => {
            let s: GateStatus = client.get_json("/v1/gate").await?;
            match &s.gate {
                None => println!("no promotion gate: fused bases become latest at once"),
                Some(g) => println!("promotion gate {g}; latest is iteration {}", s.latest),
            }
            match &s.candidate {
                Some(p) => print_promotion(p),
                None => println!("no candidate awaiting the gate"),
            }
            Ok(())
        }
        GateCommand::Promote { iteration, reason } => {
            decide(client, iteration, "promote", reason).await
        }
        GateCommand::Discard { iteration, reason } => {
            decide(client, iteration, "discard", reason).await
        }
        GateCommand::Evaluate(args) => evaluate(client, cache, args).await,
    }
}

async fn decide(
    client: &Client,
    iteration: u64,
    action: &str,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let p: Promotion = client
        .post_json(
            &format!("/v1/admin/gate/{iteration}/{action}"),
            &serde_json::json!({ "reason": reason }),
        )
        .await?;
    print_promotion(&p);
    Ok(())
}

async fn evaluate(client: &Client, cache: PathBuf, args: EvaluateArgs) -> anyhow::Result<()> {
    let (tasks, plan) = args.protocol.plan(None)?;
    let mut done = BTreeSet::new();
    loop {
        let s: GateStatus = client.get_json("/v1/gate").await?;
        let due = s
            .candidate
            .filter(|p| p.state == PromotionState::Pending && !done.contains(&p.iteration));
        let Some(candidate) = due else {
            if args.once {
                println!("no candidate awaiting evals");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs_f64(args.poll_secs.max(0.1))).await;
            continue;
        };
        let i = candidate.iteration;
        println!(
            "candidate {i}: scoring against latest (iteration {})",
            s.latest
        );
        let reference = pull(client, &cache, Some(s.latest)).await?;
        let fused = pull(client, &cache, Some(i)).await?;
        let (bases, tasks_c, plan_c) = (
            vec![(s.latest, reference.dir), (i, fused.dir)],
            tasks.clone(),
            plan.clone(),
        );
        let scores =
            tokio::task::spawn_blocking(move || heldout::score_bases(&bases, &tasks_c, &plan_c))
                .await??;
        let mut last = None;
        for pair in scores.chunks(2) {
            let [r, c] = pair else { continue };
            let methods = [
                (EvalMethod::LinearProbe, &r.probe, &c.probe),
                (EvalMethod::FewShot, &r.few_shot, &c.few_shot),
            ];
            for (method, rv, cv) in methods {
                if rv.is_empty() {
                    continue;
                }
                let eval = GateEval {
                    task: r.task.clone(),
                    method,
                    metric: "accuracy".into(),
                    reference_iteration: s.latest,
                    reference_score: heldout::mean(rv),
                    candidate_score: heldout::mean(cv),
                    seeds: rv.len(),
                    examples: plan.train,
                    reported_by: String::new(),
                };
                let p: Promotion = client
                    .post_json(&format!("/v1/admin/gate/{i}/evals"), &eval)
                    .await
                    .with_context(|| format!("reporting the {} eval of candidate {i}", r.task))?;
                last = Some(p);
            }
        }
        done.insert(i);
        match last {
            Some(p) => print_promotion(&p),
            None => println!("candidate {i}: no eval to report"),
        }
        if args.once {
            return Ok(());
        }
    }
}

fn print_promotion(p: &Promotion) {
    println!(
        "candidate {}: {:?}{}",
        p.iteration,
        p.state,
        p.reason
            .as_deref()
            .map_or(String::new(), |r| format!(" ({r})"))
    );
    for e in &p.evals {
        println!(
            "  {:<10} {:?}: {:.4} vs {:.4} for iteration {} ({:+.4})",
            e.task,
            e.method,
            e.candidate_score,
            e.reference_score,
            e.reference_iteration,
            e.gain()
        );
    }
}
