//! `coldfuse gate status|promote|discard`: the operator's side of the promotion gate, by hand. The
//! evaluator that scores candidates (`gate evaluate`) is in the lab crate; it reports through
//! [`Client::report_eval`].

use coldfuse_shared::api::Promotion;

use crate::{client::Client, evaluate::printable};

/// Prints the gate's settings and the candidate awaiting it.
pub async fn status(client: &Client) -> anyhow::Result<()> {
    let s = client.gate().await?;
    match &s.gate {
        None => println!("no promotion gate: fused bases become latest at once"),
        Some(g) => {
            println!(
                "promotion gate: tolerance {}, {} eval(s) needed; latest is iteration {}",
                g.tolerance, g.min_evals, s.latest
            );
            if let Some(sites) = &g.sites {
                println!(
                    "site evaluation: {} report(s) needed, deadline {} s after the fusion, rule {:?}",
                    sites.min_reports, sites.deadline_secs, sites.rule
                );
            }
        }
    }
    match &s.candidate {
        Some(p) => print_promotion(p),
        None => println!("no candidate awaiting the gate"),
    }
    Ok(())
}

/// Promotes (`promote`) or discards candidate `iteration` by hand, saying why.
pub async fn decide(
    client: &Client,
    iteration: u64,
    promote: bool,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let p = client.gate_decision(iteration, promote, reason).await?;
    print_promotion(&p);
    Ok(())
}

/// Prints a candidate's state, its evals and its site reports.
pub fn print_promotion(p: &Promotion) {
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
    for r in &p.site_reports {
        let counted = if p.used_reports.contains(&r.digest) {
            "counted"
        } else {
            "not yet counted"
        };
        println!(
            "  site {} report {} ({counted}): lower 95% bound of the gain {:+.4}",
            printable(r.contributor.as_deref().unwrap_or("(hidden)")),
            printable(&r.digest.chars().take(12).collect::<String>()),
            r.report.lower_bound()
        );
        for x in &r.report.results {
            println!(
                "    {:?}: {:.4} vs {:.4} ({:+.4} ± {}; {} seeds, {} / {} examples)",
                x.method,
                x.candidate_score,
                x.reference_score,
                x.gain,
                x.interval.map_or("-".into(), |h| format!("{h:.4}")),
                x.seeds,
                x.train_examples,
                x.dev_examples
            );
        }
    }
}
