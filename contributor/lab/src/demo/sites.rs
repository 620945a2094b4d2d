//! The demo's contributor sites as evaluators of each candidate: every site keeps rows it never trains
//! on, scores the candidate against the base before it on them through site evaluation (aggregates
//! only, over HTTP, as `coldfuse evaluate` does), and the gate decides on the reports; a held candidate
//! is discarded by the operator. Then the table and plot panel "gain at the contributing sites".

use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::Context;
use coldfuse_contributor::{evaluate::SiteEvaluation, heldout::tasks::Task, Client};
use coldfuse_shared::{
    api::{EvalMethod, Promotion, PromotionState},
    data::{Column, Columns, DataSpec, Example, Format, LabelSpace, Target},
};

use crate::eval::plot::Series;

/// Rows each site keeps for evaluating candidates (never trained on), at most.
pub const SITE_EVAL_ROWS: usize = 400;

/// One site's linear-probe result on one candidate.
#[derive(Debug, Clone)]
pub struct SiteGain {
    /// The candidate.
    pub iteration: u64,
    /// The site (its task's name).
    pub site: String,
    /// Candidate minus the base before it.
    pub gain: f64,
    /// Half-width of the gain's 95% interval.
    pub interval: f64,
}

/// Writes `rows` as site `name`'s private evaluation file under `dir` (JSONL) and returns it as a task.
pub fn private_task(
    dir: &Path,
    name: &str,
    rows: &[Example],
    labels: &LabelSpace,
) -> anyhow::Result<Task> {
    let LabelSpace::Classes(classes) = labels else {
        anyhow::bail!("site {name}: the demo's site evaluation scores classification tasks");
    };
    let mut text = String::new();
    for row in rows {
        let Target::Class(k) = row.target else {
            anyhow::bail!("site {name}: a row without a class");
        };
        let mut v = serde_json::json!({"text": row.text, "label": classes[k as usize]});
        if let Some(pair) = &row.pair {
            v["pair"] = pair.clone().into();
        }
        let _ = writeln!(text, "{v}");
    }
    std::fs::create_dir_all(dir)?;
    let file = dir.join("private-eval.jsonl");
    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    let pair = rows.iter().any(|r| r.pair.is_some());
    Ok(Task {
        name: name.to_string(),
        file,
        spec: DataSpec {
            format: Some(Format::Jsonl),
            columns: Columns {
                text: Column::Name("text".into()),
                text_pair: pair.then(|| Column::Name("pair".into())),
                label: Column::Name("label".into()),
            },
            ..DataSpec::default()
        },
    })
}

/// Every site scores candidate `iteration` against latest and reports; returns the gate's decision
/// (a held candidate is then discarded by `admin`) and each site's linear-probe gain.
pub async fn evaluate(
    sites: &[(&SiteEvaluation, &Client)],
    admin: &Client,
    cache: &Path,
    iteration: u64,
) -> anyhow::Result<(Promotion, Vec<SiteGain>)> {
    let latest = wait_for_candidate(admin, iteration).await?;
    let mut gains = Vec::new();
    let mut decision = None;
    for (eval, client) in sites {
        let answer = eval.evaluate(client, cache, iteration, latest).await?;
        for r in answer
            .report
            .report
            .results
            .iter()
            .filter(|r| r.method == EvalMethod::LinearProbe)
        {
            gains.push(SiteGain {
                iteration,
                site: eval.tasks[0].name.clone(),
                gain: r.gain,
                interval: r.interval.unwrap_or(0.0),
            });
        }
        decision = Some(answer.promotion);
    }
    let mut p = decision.context("no site evaluated the candidate")?;
    println!(
        "candidate {iteration}: {:?} by the sites' reports ({})",
        p.state,
        p.reason.as_deref().unwrap_or("")
    );
    if p.state == PromotionState::Held {
        let reason = "held by the contributing sites' reports; discarded by the demo's operator";
        p = admin
            .gate_decision(iteration, false, Some(reason.into()))
            .await?;
    }
    Ok((p, gains))
}

/// Waits until candidate `iteration` awaits the gate; returns the latest iteration it is compared with.
async fn wait_for_candidate(admin: &Client, iteration: u64) -> anyhow::Result<u64> {
    for _ in 0..3000 {
        let s = admin.gate().await?;
        if s.candidate
            .as_ref()
            .is_some_and(|p| p.iteration == iteration)
        {
            return Ok(s.latest);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("candidate {iteration} did not reach the gate in 10 minutes")
}

/// Prints the panel: per candidate, each site's gain with its 95% interval and the gate's decision.
pub fn print_panel(gains: &[SiteGain], decisions: &[(u64, PromotionState)]) {
    let mut sites: Vec<&str> = Vec::new();
    for g in gains {
        if !sites.contains(&g.site.as_str()) {
            sites.push(&g.site);
        }
    }
    println!();
    println!(
        "gain at the contributing sites (linear probe on each site's own held-back rows, candidate vs \
         the base before it, 95% CI)"
    );
    let mut head = format!("{:<9}", "candidate");
    for s in &sites {
        let _ = write!(head, "  {s:<18}");
    }
    println!("{head}  gate");
    for (iteration, state) in decisions {
        let mut line = format!("{iteration:<9}");
        for s in &sites {
            let cell = gains
                .iter()
                .find(|g| g.iteration == *iteration && g.site == *s)
                .map_or("-".into(), |g| {
                    format!("{:+.3} ± {:.3}", g.gain, g.interval)
                });
            let _ = write!(line, "  {cell:<18}");
        }
        println!("{line}  {state:?}");
    }
}

/// The panel's series for the plot: per site, (candidate, gain, half-width).
pub fn series(gains: &[SiteGain]) -> Series {
    let mut out: Series = Vec::new();
    for g in gains {
        let point = (g.iteration as f64, g.gain, g.interval);
        match out.iter_mut().find(|(s, _)| *s == g.site) {
            Some((_, pts)) => pts.push(point),
            None => out.push((g.site.clone(), vec![point])),
        }
    }
    out
}

/// Writes `sites.csv`: one row per candidate and site.
pub fn write_csv(root: &Path, gains: &[SiteGain]) -> anyhow::Result<()> {
    let mut csv = String::from("iteration,site,method,gain,ci95_half_width\n");
    for g in gains {
        let _ = writeln!(
            csv,
            "{},{},linear_probe,{},{}",
            g.iteration, g.site, g.gain, g.interval
        );
    }
    std::fs::write(root.join("sites.csv"), csv)?;
    Ok(())
}
