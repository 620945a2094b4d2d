//! `coldfuse status` and `coldfuse lineage`: the current round, the caller's identity and
//! contribution, cached bases, and what each published base is made of.

use crate::{client::Client, settings::Settings};

/// Prints the round, who the token belongs to, and this contributor's contribution to the round.
pub async fn show(client: &Client, settings: &Settings) -> anyhow::Result<()> {
    let round = client.round().await?;
    let me = client.whoami().await?;
    println!("coordinator  {}", client.url());
    println!(
        "round        {} (base iteration {}, {})",
        round.iteration,
        round.base_iteration,
        &round.base_sha256[..12.min(round.base_sha256.len())]
    );
    println!(
        "accepted     {} of quorum {} [{}]; rejected {}",
        round.accepted,
        round.quorum,
        round.contributors.join(", "),
        round.rejected
    );
    println!(
        "fusion       {}{}{}",
        round.strategy,
        if round.fusing { ", fusing now" } else { "" },
        round
            .deadline
            .map_or(String::new(), |d| format!(", deadline at unix {d}"))
    );
    let who = me
        .contributor
        .clone()
        .or_else(|| settings.contributor.clone());
    match (me.role, &who) {
        (None, _) => println!("you          anonymous (no token)"),
        (Some(role), None) => println!("you          {role:?}"),
        (Some(role), Some(c)) => println!("you          {c} ({role:?})"),
    }
    if let Some(c) = who {
        match client.contribution(&c).await? {
            None => println!("contribution none in this round"),
            Some(s) => println!(
                "contribution {} {}",
                &s.diff_sha256[..12.min(s.diff_sha256.len())],
                match &s.verdict {
                    None => format!("uploading ({} bytes received)", s.received_bytes),
                    Some(v) => serde_json::to_string(v)?,
                }
            ),
        }
    }
    let bases = settings.cache_dir.join("bases");
    let cached = std::fs::read_dir(&bases).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.path().join(crate::pull::CACHED_MANIFEST).is_file())
            .count()
    });
    println!("cache        {} ({cached} bases)", bases.display());
    Ok(())
}

/// Prints one line per committed iteration: parent, contributors, strategy, update norm, weights hash.
pub async fn lineage(client: &Client) -> anyhow::Result<()> {
    println!("iter  parent  contributions  strategy             update_l2   base_sha256");
    for r in client.lineage().await? {
        let who: Vec<&str> = r
            .contributions
            .iter()
            .map(|c| c.contributor.as_str())
            .collect();
        println!(
            "{:>4}  {:>6}  {:>13}  {:<19}  {:>9}   {}  {}",
            r.iteration,
            r.parent.map_or("-".into(), |p| p.to_string()),
            r.contributions.len(),
            r.fusion
                .as_ref()
                .map_or("-".into(), |f| f.strategy.to_string()),
            r.update_l2_norm.map_or("-".into(), |n| format!("{n:.4}")),
            &r.base_sha256[..16.min(r.base_sha256.len())],
            who.join(",")
        );
    }
    Ok(())
}
