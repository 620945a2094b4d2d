//! `coldfuse gate evaluate`: the promotion gate's evaluator. It scores each fused candidate against the
//! current latest on public held-out tasks (linear probe, and few-shot unless `--probe-only`) and
//! reports each score to the coordinator, which promotes the candidate or holds it.

use std::{collections::BTreeSet, path::Path, time::Duration};

use anyhow::Context;
use coldfuse_contributor::{evaluate, gate::print_promotion, pull::pull, Client};
use coldfuse_shared::api::{GateEval, PromotionState};

use crate::eval::{heldout, tasks::Registry, ProtocolArgs};

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

/// Scores candidates as they appear (or the current one, with `--once`) and reports the scores.
pub async fn evaluate(client: &Client, cache: &Path, args: EvaluateArgs) -> anyhow::Result<()> {
    let registry = Registry::new(&args.protocol.task_files)?;
    let (tasks, plan) = args.protocol.plan(&registry, None)?;
    let mut done = BTreeSet::new();
    loop {
        let s = client.gate().await?;
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
        let reference = pull(client, cache, Some(s.latest)).await?;
        let fused = pull(client, cache, Some(i)).await?;
        let (bases, tasks_c, plan_c) = (
            vec![(s.latest, reference.dir), (i, fused.dir)],
            tasks.clone(),
            plan.clone(),
        );
        let scores =
            tokio::task::spawn_blocking(move || heldout::score_bases(&bases, &tasks_c, &plan_c))
                .await??;
        let mut last = None;
        for (task, r) in evaluate::compare(&scores)? {
            let eval = GateEval {
                task,
                method: r.method,
                metric: r.metric,
                reference_iteration: s.latest,
                reference_score: r.reference_score,
                candidate_score: r.candidate_score,
                seeds: r.seeds as usize,
                examples: r.train_examples as usize,
                reported_by: String::new(),
            };
            let p = client
                .report_eval(i, &eval)
                .await
                .with_context(|| format!("reporting the {} eval of candidate {i}", eval.task))?;
            last = Some(p);
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
