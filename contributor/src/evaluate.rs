//! Site evaluation (`coldfuse evaluate`, and `coldfuse run --evaluate-candidates`): score each gated
//! candidate against `latest` on this site's own data with the held-out protocol, and send the
//! coordinator only aggregates: per task and method both mean scores, the paired gain and its 95%
//! interval, and the seed and example counts. No text, label or per-example output leaves the site;
//! the report is named by a digest the site recomputes from what it sent, and kept locally.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context};
use coldfuse_shared::{
    api::{
        EvalMethod, Promotion, PromotionState, ReportAnswer, SigningPublicKey, SiteReport,
        SiteResult,
    },
    private_file::{write_private, Existing},
};

use crate::{
    client::Client,
    gate::print_promotion,
    heldout::{self, paired_gain, tasks, HeldoutPlan, PlanArgs},
    pull::pull,
    settings::Settings,
};

/// Arguments of `coldfuse evaluate`.
#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// This site's data to score candidates on (`--task NAME=PATH` or `--tasks-file`; the names
    /// stay here).
    #[command(flatten)]
    pub tasks: tasks::TaskArgs,
    /// How each base is scored.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Evaluate the current candidate (if any) and exit, instead of waiting for candidates.
    #[arg(long)]
    pub once: bool,
    /// Seconds between polls while waiting.
    #[arg(long, default_value_t = 30.0)]
    pub poll_secs: f64,
    /// Where the reports sent are kept (`report-{iteration}.json`).
    #[arg(long, default_value = "coldfuse-work/reports")]
    pub reports: PathBuf,
}

/// Why `evaluate` has nothing to do on this deployment.
const NO_SITE_EVALUATION: &str =
    "this deployment's gate takes no site reports (gate.sites is not set)";

/// What one [`SiteEvaluation::poll`] found.
#[derive(Debug)]
pub enum Poll {
    /// The deployment's gate takes no site reports.
    Off,
    /// No candidate due.
    Idle,
    /// A candidate was scored and reported on: the coordinator's answer.
    Reported(Box<ReportAnswer>),
}

/// What a site scores candidates on, and how.
#[derive(Debug, Clone)]
pub struct SiteEvaluation {
    /// This site's contributor id (what its token reports as; part of each report's digest).
    pub contributor: String,
    /// The site's tasks (its own data).
    pub tasks: Vec<tasks::Task>,
    /// The protocol.
    pub plan: HeldoutPlan,
    /// Where the reports sent are kept.
    pub reports: PathBuf,
}

impl SiteEvaluation {
    /// The evaluation `evaluate` describes: every task from its files, few-shot on each unless
    /// `--probe-only`.
    pub fn from_args(args: &EvaluateArgs, contributor: String) -> anyhow::Result<Self> {
        let registry = tasks::Registry::new(&args.tasks)?;
        let tasks = registry.from_files().to_vec();
        if tasks.is_empty() {
            bail!("name this site's data to score candidates on: --task NAME=PATH or --tasks-file FILE");
        }
        Ok(Self::new(
            contributor,
            tasks,
            &args.plan,
            args.reports.clone(),
        ))
    }

    /// Scores `tasks` with `plan` (few-shot on each unless `--probe-only`).
    pub fn new(
        contributor: String,
        tasks: Vec<tasks::Task>,
        plan: &PlanArgs,
        reports: PathBuf,
    ) -> Self {
        let plan = plan.plan(tasks.iter().map(|t| t.name.clone()).collect());
        heldout::announce(&tasks::names(&tasks), &plan);
        Self {
            contributor,
            tasks,
            plan,
            reports,
        }
    }

    /// Whether this site already reported on candidate `iteration` (its report is kept).
    pub fn reported(&self, iteration: u64) -> bool {
        self.report_path(iteration).is_file()
    }

    fn report_path(&self, iteration: u64) -> PathBuf {
        self.reports.join(format!("report-{iteration:06}.json"))
    }

    /// One look at the gate: scores and reports on the candidate if it is due (pending, and not in
    /// `tried` or reported on already; it goes into `tried` whatever happens).
    pub async fn poll(
        &self,
        client: &Client,
        cache: &Path,
        tried: &mut BTreeSet<u64>,
    ) -> anyhow::Result<Poll> {
        let s = client.gate().await?;
        if s.gate.as_ref().is_none_or(|g| g.sites.is_none()) {
            return Ok(Poll::Off);
        }
        let Some(i) = due(s.candidate.as_ref(), tried, self) else {
            return Ok(Poll::Idle);
        };
        tried.insert(i);
        let answer = self
            .evaluate(client, cache, i, s.latest)
            .await
            .with_context(|| format!("candidate {i}"))?;
        Ok(Poll::Reported(Box::new(answer)))
    }

    /// Scores `candidate` against `latest`, reports the aggregates and keeps the answer.
    pub async fn evaluate(
        &self,
        client: &Client,
        cache: &Path,
        candidate: u64,
        latest: u64,
    ) -> anyhow::Result<ReportAnswer> {
        println!("candidate {candidate}: scoring against latest (iteration {latest}) on this site's data");
        let reference = pull(client, cache, Some(latest)).await?;
        let fused = pull(client, cache, Some(candidate)).await?;
        let bases = vec![(latest, reference.dir), (candidate, fused.dir)];
        let (tasks, plan) = (self.tasks.clone(), self.plan.clone());
        let scores =
            tokio::task::spawn_blocking(move || heldout::score_bases(&bases, &tasks, &plan))
                .await??;
        let report = aggregate(latest, &scores)?;
        let answer = client
            .report_site(candidate, &report)
            .await
            .with_context(|| format!("reporting on candidate {candidate}"))?;
        check_answer(&answer, candidate, &report, &self.contributor)?;
        std::fs::create_dir_all(&self.reports)
            .with_context(|| format!("creating {}", self.reports.display()))?;
        let path = self.report_path(candidate);
        write_private(
            &path,
            &serde_json::to_vec_pretty(&answer)?,
            Existing::Replace,
        )
        .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "candidate {candidate}: report {} sent (kept in {})",
            answer.report.digest,
            path.display()
        );
        Ok(answer)
    }
}

/// The aggregates of paired scores (reference then candidate, per task), without the task names:
/// what a site sends.
pub fn aggregate(
    reference_iteration: u64,
    scores: &[heldout::BaseScores],
) -> anyhow::Result<SiteReport> {
    Ok(SiteReport {
        reference_iteration,
        results: compare(scores)?.into_iter().map(|(_, r)| r).collect(),
    })
}

/// Per task and method of paired scores (reference then candidate, per task): the task's name and
/// both means, the gain with its 95% half-width, and the counts. Nothing per example.
pub fn compare(scores: &[heldout::BaseScores]) -> anyhow::Result<Vec<(String, SiteResult)>> {
    let mut results = Vec::new();
    for pair in scores.chunks(2) {
        let [r, c] = pair else {
            bail!("scores come in pairs (reference, candidate)")
        };
        for (method, rv, cv) in [
            (EvalMethod::LinearProbe, &r.probe, &c.probe),
            (EvalMethod::FewShot, &r.few_shot, &c.few_shot),
        ] {
            if rv.is_empty() {
                continue;
            }
            let (gain, half) = paired_gain(cv, rv);
            let (reference_score, candidate_score) = (heldout::mean(rv), heldout::mean(cv));
            if !(reference_score.is_finite() && candidate_score.is_finite()) {
                bail!(
                    "task {}: no {} to report (a constant prediction or target has none)",
                    r.task,
                    r.metric
                );
            }
            let result = SiteResult {
                method,
                metric: r.metric.clone(),
                reference_score,
                candidate_score,
                gain,
                interval: half.is_finite().then_some(half),
                seeds: rv.len() as u64,
                train_examples: r.train_examples as u64,
                dev_examples: r.dev_examples as u64,
            };
            results.push((r.task.clone(), result));
        }
    }
    Ok(results)
}

/// The coordinator kept what was sent, as this site's, under the digest the site computes.
fn check_answer(
    answer: &ReportAnswer,
    iteration: u64,
    sent: &SiteReport,
    contributor: &str,
) -> anyhow::Result<()> {
    let kept = &answer.report;
    let nonce = kept.nonce.as_deref().unwrap_or_default();
    if kept.report != *sent
        || kept.contributor.as_deref() != Some(contributor)
        || kept.digest != sent.digest(iteration, contributor, nonce)
    {
        bail!(
            "the coordinator's answer does not match the report sent (digest {}): not counted as sent",
            kept.digest
        );
    }
    Ok(())
}

/// Checks the gate's signed decision on `iteration` against `key` and, given the report this site
/// kept, that the decision counted it (by the digest recomputed from the report's content).
pub async fn check_counted(
    client: &Client,
    key: &SigningPublicKey,
    iteration: u64,
    kept: Option<(&Path, &str)>,
) -> anyhow::Result<()> {
    let record = client.gate_record(iteration).await?;
    let Some(signed) = &record.receipt else {
        bail!(
            "candidate {iteration} has no signed decision yet ({:?})",
            record.state
        );
    };
    signed
        .verify(key)
        .with_context(|| format!("the gate receipt of candidate {iteration}"))?;
    let r = &signed.receipt;
    if r.iteration != iteration || r.state != record.state {
        bail!(
            "the signed decision ({:?} of iteration {}) is not the record's ({:?} of {iteration})",
            r.state,
            r.iteration,
            record.state
        );
    }
    println!(
        "candidate {iteration}: {:?} by {}, signed with key {} ({}); {} site report(s) counted",
        r.state,
        printable(&r.decided_by),
        printable(&r.key_id),
        printable(&r.reason),
        r.reports.len()
    );
    if let Some((path, contributor)) = kept {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let answer: ReportAnswer = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not a kept site report", path.display()))?;
        let nonce = answer.report.nonce.as_deref().unwrap_or_default();
        let digest = answer.report.report.digest(iteration, contributor, nonce);
        if !signed.counts(&digest) {
            bail!("the signed decision does not count this site's report {digest}");
        }
        if r.decided_by.starts_with("admin") {
            println!(
                "this site's report {digest} was counted by the gate's last verdict; the operator \
                 then decided by hand"
            );
        } else {
            println!("this site's report {digest} was counted");
        }
    }
    Ok(())
}

/// The candidate this site should evaluate now, if any: pending (a held one waits for the operator),
/// and not reported on yet.
pub fn due(
    candidate: Option<&Promotion>,
    done: &BTreeSet<u64>,
    eval: &SiteEvaluation,
) -> Option<u64> {
    candidate
        .filter(|p| p.state == PromotionState::Pending)
        .map(|p| p.iteration)
        .filter(|i| !done.contains(i) && !eval.reported(*i))
}

/// Runs `coldfuse evaluate`: reports on candidates as they appear (or on the current one, `--once`).
/// While waiting, a failed candidate is reported and not retried, a failed poll is retried.
pub async fn evaluate(settings: &Settings, args: EvaluateArgs) -> anyhow::Result<()> {
    let client = settings.client()?;
    let contributor = crate::login::contributor_id(None, settings, Some(&client)).await?;
    let eval = SiteEvaluation::from_args(&args, contributor)?;
    let poll = Duration::from_secs_f64(args.poll_secs.clamp(0.1, 3600.0));
    let mut tried = BTreeSet::new();
    loop {
        let polled = eval.poll(&client, &settings.cache_dir, &mut tried).await;
        match polled.and_then(|p| match p {
            Poll::Off => Err(anyhow::anyhow!(NO_SITE_EVALUATION)),
            p => Ok(p),
        }) {
            Ok(Poll::Reported(answer)) => print_promotion(&answer.promotion),
            Ok(_) if args.once => println!("no candidate awaiting this site's report"),
            Ok(_) => {}
            Err(e) if args.once => return Err(e),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "site evaluation");
                println!("site evaluation failed: {e:#}");
            }
        }
        if args.once {
            return Ok(());
        }
        tokio::time::sleep(poll).await;
    }
}

/// `s` with control characters (terminal escapes from a hostile answer) shown as `?`.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
