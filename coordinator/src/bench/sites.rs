//! `coldfuse-coordinator bench sites`: the control plane with many sites. For each N, a fresh
//! deployment of a tiny synthetic base (quorum N, `mean`); N simulated sites each take a token,
//! announce and upload a diff (at most `--concurrency` at once) while wrk polls `/v1/round`; the
//! round closes at quorum. It reports errors, announce and upload latency (our client), round-status
//! latency (wrk), the close time, and the round's state and lineage record sizes per site, which
//! must stay flat as N grows.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use coldfuse_shared::{
    api::{keys, DeploymentConfig},
    diff::{BaseRef, DIFF_FILE},
    synthetic,
};
use futures::StreamExt;

use super::{
    announce, deploy, new_site, upload, wait_first_fusion, wrk, Deployed, LoadArgs, Target, WrkRun,
    WRK_REPORT,
};
use crate::Store;

/// Settings of the many-sites benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct SitesArgs {
    /// Sites per run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000")]
    pub sites: Vec<usize>,
    /// Parameters of the synthetic base.
    #[arg(long, default_value_t = 50_000)]
    pub params: usize,
    /// Sites announcing or uploading at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// wrk connections polling `/v1/round` meanwhile.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One run.
#[derive(Debug, Clone, serde::Serialize)]
struct Run {
    sites: usize,
    errors: usize,
    announce_p50_ms: f64,
    announce_p99_ms: f64,
    upload_p50_ms: f64,
    upload_p99_ms: f64,
    round: WrkRun,
    /// All sites announced and uploaded.
    sites_s: f64,
    /// Last acceptance to `latest` moving.
    close_s: f64,
    /// Bytes of the round's objects except the diffs (manifests, verdicts), per site.
    state_bytes_per_site: f64,
    /// Bytes of the lineage record, per site.
    lineage_bytes_per_site: f64,
}

/// Runs every N: prints a table and one JSON line.
pub async fn run(args: SitesArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        std::process::Command::new("wrk").arg("-v").output().is_ok(),
        "wrk is not installed: apt-get install wrk"
    );
    let mut runs = Vec::new();
    for &n in &args.sites {
        eprintln!("{n} sites ...");
        let run = measure(&args, n).await?;
        eprintln!("{}", serde_json::to_string(&run)?);
        runs.push(run);
    }
    println!(
        "{} sites × (token, announce, upload of a {:.0} k-parameter bf16 diff), {} at once; \
         wrk -c{} on /v1/round meanwhile",
        args.sites
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        args.params as f64 / 1e3,
        args.concurrency,
        args.connections
    );
    let head = [
        "sites",
        "errors",
        "ann p50",
        "ann p99",
        "upl p50",
        "upl p99",
        "round/s",
        "rnd p99",
        "sites s",
        "close s",
        "state/site",
        "lineage/site",
    ];
    println!("{}", head.map(|h| format!("{h:>12}")).join(" "));
    for r in &runs {
        let row = [
            r.sites.to_string(),
            (r.errors as u64 + r.round.errors).to_string(),
            format!("{:.1} ms", r.announce_p50_ms),
            format!("{:.1} ms", r.announce_p99_ms),
            format!("{:.1} ms", r.upload_p50_ms),
            format!("{:.1} ms", r.upload_p99_ms),
            format!("{:.0}", r.round.rps),
            format!("{:.1} ms", r.round.p99_ms),
            format!("{:.1}", r.sites_s),
            format!("{:.2}", r.close_s),
            format!("{:.0} B", r.state_bytes_per_site),
            format!("{:.0} B", r.lineage_bytes_per_site),
        ];
        println!("{}", row.map(|v| format!("{v:>12}")).join(" "));
    }
    let json = serde_json::json!({"bench": "sites", "params": args.params, "runs": runs});
    println!("{json}");
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&json)?).context("writing --out")?;
    }
    Ok(())
}

async fn measure(args: &SitesArgs, n: usize) -> anyhow::Result<Run> {
    let tmp = tempfile::tempdir()?;
    let layout = synthetic::roberta_like(args.params);
    let source = tmp.path().join("source");
    synthetic::write_base(&source, &layout)?;
    let store_dir = tmp.path().join("store");
    let store = Store::open(&format!("file://{}", store_dir.display()))?;
    let config = DeploymentConfig {
        quorum: n,
        ..DeploymentConfig::default()
    };
    let Deployed {
        coordinator: c,
        fusion,
        plain: url,
        admin,
        base_ref,
        ..
    } = deploy(&store, &source, config, tmp.path()).await?;
    let client = reqwest::Client::new();
    let sites_dir = tmp.path().join("sites");
    let script = tmp.path().join("report.lua");
    std::fs::write(&script, WRK_REPORT)?;
    let polling = {
        let load = LoadArgs {
            params: 0,
            contributions: 0,
            uploads: 0,
            upload_mb_per_s: 0.0,
            connections: args.connections,
            threads: 1,
            seconds: 3600,
            out: None,
        };
        let target = Target {
            name: "round",
            url: format!("{url}/v1/round"),
            headers: vec![],
        };
        tokio::spawn(async move { wrk(&load, &script, &target).await })
    };
    let started = Instant::now();
    let admin = Arc::new(admin);
    let results: Vec<anyhow::Result<(Duration, Duration)>> = futures::stream::iter(0..n)
        .map(|i| {
            let (client, url, admin, layout, base_ref, dir) = (
                client.clone(),
                url.clone(),
                admin.clone(),
                layout.clone(),
                base_ref.clone(),
                sites_dir.clone(),
            );
            async move { one_site(&client, &url, &admin, &dir, &layout, &base_ref, i).await }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    let sites_s = started.elapsed().as_secs_f64();
    let close_s = wait_first_fusion(&c, Duration::from_secs(600)).await?;
    // wrk runs until told to stop: SIGINT makes it print its report.
    stop_wrk();
    let round = polling.await??;
    fusion.abort();
    let errors = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("first error: {e:#}");
    }
    let mut announce: Vec<f64> = Vec::new();
    let mut upload: Vec<f64> = Vec::new();
    for (a, u) in results.iter().flatten() {
        announce.push(a.as_secs_f64() * 1e3);
        upload.push(u.as_secs_f64() * 1e3);
    }
    let round_dir = store_dir.join(keys::round_prefix(1));
    let state_bytes = dir_bytes(&round_dir, &|p| !p.ends_with(DIFF_FILE));
    let lineage = std::fs::metadata(store_dir.join(keys::iteration_record(1)))?.len();
    Ok(Run {
        sites: n,
        errors,
        announce_p50_ms: percentile(&mut announce, 0.5),
        announce_p99_ms: percentile(&mut announce, 0.99),
        upload_p50_ms: percentile(&mut upload, 0.5),
        upload_p99_ms: percentile(&mut upload, 0.99),
        round,
        sites_s,
        close_s,
        state_bytes_per_site: state_bytes as f64 / n as f64,
        lineage_bytes_per_site: lineage as f64 / n as f64,
    })
}

/// Site `i`: a token, a diff, the announce and the upload (timed); an error for any refusal.
async fn one_site(
    client: &reqwest::Client,
    url: &str,
    admin: &str,
    root: &Path,
    layout: &[(String, Vec<usize>)],
    base_ref: &BaseRef,
    i: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let site = new_site(client, url, admin, root, layout, base_ref, i).await?;
    let started = Instant::now();
    announce(client, url, &site).await?;
    let announced = started.elapsed();
    let started = Instant::now();
    upload(client, url, &site, None)
        .await?
        .error_for_status()
        .context("upload")?;
    let uploaded = started.elapsed();
    tokio::fs::remove_dir_all(&site.dir).await?;
    Ok((announced, uploaded))
}

/// Sends SIGINT to the wrk processes this process started (wrk prints its report on SIGINT).
fn stop_wrk() {
    let me = std::process::id().to_string();
    let _ = std::process::Command::new("pkill")
        .args(["-INT", "-P", &me, "wrk"])
        .status();
}

/// The `q` quantile (nearest rank) of `values`, 0 when empty.
fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Bytes of the files under `dir` whose path passes `keep`.
fn dir_bytes(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&path, keep),
                Ok(m) if keep(&path) => m.len(),
                _ => 0,
            }
        })
        .sum()
}
