//! `coldfuse-coordinator bench`: the server under load from an external client (`wrk`), not our own.
//! One run, four phases — idle, during diff uploads, during a fusion, during both — each measured
//! on `/v1/round` and on a 1 MB ranged download of the base's weights, over plain HTTP and TLS.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use coldfuse_shared::{
    api::{BaseManifest, DeploymentConfig, RoundStatus},
    diff::{BaseRef, DiffManifest, Encoding, DIFF_FILE},
    synthetic,
};
use futures::StreamExt;

use crate::{
    edge::{self, pki, EdgeConfig, Tls, TlsFiles},
    init, routes, Coordinator, Store,
};

pub mod round;
pub mod sites;

/// `bench`: the load benchmark, or with a subcommand another one.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Another benchmark than the load one.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// The load benchmark's settings.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// The benchmarks besides the load one.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Round close: time, peak RSS, peak local disk and bytes read from the store from the last
    /// accepted diff to `latest` moving, by model size, contributions and strategy.
    Round(round::RoundArgs),
    /// Many sites: announce, upload and round-status latency with N simulated sites in one round,
    /// and the round's state and lineage size per site as N grows.
    Sites(sites::SitesArgs),
}

/// Runs the benchmark `args` names.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        Some(BenchCommand::Round(round)) => round::run(round).await,
        Some(BenchCommand::Sites(sites)) => sites::run(sites).await,
        None => run_load(args.load).await,
    }
}

/// Settings of the load benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Parameters of the synthetic base model.
    #[arg(long, default_value_t = 125_000_000)]
    pub params: usize,
    /// Accepted contributions the measured fusion fuses (more makes it last longer).
    #[arg(long, default_value_t = 8)]
    pub contributions: usize,
    /// Concurrent diff uploads in the upload phases.
    #[arg(long, default_value_t = 8)]
    pub uploads: usize,
    /// Rate of each upload, in MB/s (each sends 90 % of a diff, then starts again).
    #[arg(long, default_value_t = 10.0)]
    pub upload_mb_per_s: f64,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What wrk reports at the end of a run (through [`WRK_REPORT`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct WrkRun {
    requests: u64,
    seconds: f64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Connect, read, write and timeout errors, and non-2xx answers.
    errors: u64,
}

/// A wrk script whose `done` prints the run's figures as one JSON line.
const WRK_REPORT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout + e.status
  io.write(string.format(
    '{"requests":%d,"seconds":%f,"rps":%f,"p50_ms":%f,"p99_ms":%f,"errors":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, errors))
end
"#;

/// One measurement target.
struct Target {
    name: &'static str,
    url: String,
    headers: Vec<&'static str>,
}

/// Runs wrk against `target` for `seconds`.
async fn wrk(args: &LoadArgs, script: &Path, target: &Target) -> anyhow::Result<WrkRun> {
    let mut cmd = tokio::process::Command::new("wrk");
    cmd.arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .arg("-s")
        .arg(script);
    for h in &target.headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(&target.url)
        .output()
        .await
        .context("running wrk (install it: apt-get install wrk)")?;
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("no report from wrk: {stdout}"))?;
    Ok(serde_json::from_str(line)?)
}

/// A fresh deployment served on loopback, with its fusion task running.
struct Deployed {
    coordinator: Arc<Coordinator>,
    fusion: tokio::task::JoinHandle<()>,
    /// Plain HTTP and TLS base URLs.
    plain: String,
    tls: String,
    admin: String,
    /// The latest (initial) base, as sites name it in their diffs.
    base_ref: BaseRef,
}

/// Initialises a deployment of model dir `source` in `store` with `config`, loads its coordinator
/// (work directory and certificates under `dir`) and serves it through the real edge.
async fn deploy(
    store: &Store,
    source: &Path,
    config: DeploymentConfig,
    dir: &Path,
) -> anyhow::Result<Deployed> {
    let done = init::init(store, source, config, &Default::default()).await?;
    let coordinator =
        Coordinator::load(store.clone(), &dir.join("work"), Some(done.signer)).await?;
    let fusion = tokio::spawn(crate::fusion_task::run(coordinator.clone()));
    let (plain, tls) = listen(&coordinator, dir).await?;
    let base: BaseManifest = reqwest::get(format!("{plain}/v1/bases/latest"))
        .await?
        .json()
        .await?;
    let base_ref = BaseRef {
        id: "bench".into(),
        sha256: base.base_sha256,
    };
    Ok(Deployed {
        coordinator,
        fusion,
        plain,
        tls,
        admin: done.admin_token,
        base_ref,
    })
}

/// A site: its token and diff on disk (announced or accepted).
struct Site {
    name: String,
    token: String,
    dir: PathBuf,
    manifest: DiffManifest,
}

/// Runs the load benchmark: prints a table and one JSON line.
async fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        Command::new("wrk").arg("-v").output().is_ok(),
        "wrk is not installed: apt-get install wrk (scripts/bench/load.sh does)"
    );
    let tmp = tempfile::tempdir()?;
    let script = tmp.path().join("report.lua");
    std::fs::write(&script, WRK_REPORT)?;
    eprintln!(
        "writing a {:.0} M-parameter synthetic base and {} bf16 diffs ...",
        args.params as f64 / 1e6,
        args.contributions + args.uploads
    );
    let layout = synthetic::roberta_like(args.params);
    let source = tmp.path().join("source");
    synthetic::write_base(&source, &layout)?;
    let store = Store::open(&format!("file://{}", tmp.path().join("store").display()))?;
    let config = DeploymentConfig {
        quorum: usize::MAX,
        ..DeploymentConfig::default()
    };
    let Deployed {
        plain,
        tls,
        admin,
        base_ref,
        ..
    } = deploy(&store, &source, config, tmp.path()).await?;
    let client = reqwest::Client::new();
    let mut sites = Vec::new();
    for i in 0..args.contributions + args.uploads {
        sites.push(site(&client, &plain, &admin, tmp.path(), &layout, &base_ref, i).await?);
    }
    let (fused, uploading) = sites.split_at(args.contributions);
    for s in fused {
        upload(&client, &plain, s, None).await?.error_for_status()?;
    }
    let targets: Vec<Target> = [(&plain, "http"), (&tls, "https")]
        .into_iter()
        .flat_map(|(url, scheme)| {
            [
                Target {
                    name: if scheme == "http" {
                        "round"
                    } else {
                        "round tls"
                    },
                    url: format!("{url}/v1/round"),
                    headers: vec![],
                },
                Target {
                    name: if scheme == "http" {
                        "1 MB range"
                    } else {
                        "1 MB range tls"
                    },
                    url: format!("{url}/v1/bases/0/files/model.safetensors"),
                    headers: vec!["Range: bytes=0-1048575"],
                },
            ]
        })
        .collect();
    let measure =
        async |phase: &'static str| -> anyhow::Result<Vec<(&'static str, &'static str, WrkRun)>> {
            let mut runs = Vec::new();
            for t in &targets {
                runs.push((phase, t.name, wrk(&args, &script, t).await?));
            }
            Ok(runs)
        };
    let mut results = Vec::new();
    eprintln!("phase idle ...");
    results.extend(measure("idle").await?);

    eprintln!(
        "phase uploads: {} uploads at {} MB/s each ...",
        args.uploads, args.upload_mb_per_s
    );
    let streams = start_uploads(&client, &plain, uploading, args.upload_mb_per_s);
    results.extend(measure("uploads").await?);
    for s in streams {
        s.abort();
    }

    eprintln!(
        "phase both: uploads restart, then a fusion of {} diffs starts ...",
        args.contributions
    );
    let streams = start_uploads(&client, &plain, uploading, args.upload_mb_per_s);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fusion_started = Instant::now();
    client
        .post(format!("{plain}/v1/admin/fuse"))
        .bearer_auth(&admin)
        .send()
        .await?
        .error_for_status()?;
    wait_fusing(&client, &plain).await?;
    results.extend(measure("both").await?);
    let fusing_after_both = round(&client, &plain).await?.fusing;
    for s in streams {
        s.abort();
    }
    eprintln!("phase fusion ...");
    results.extend(measure("fusion").await?);
    let status = round(&client, &plain).await?;
    while round(&client, &plain).await?.fusing {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fusion_s = fusion_started.elapsed().as_secs_f64();
    report(&args, &results, fusion_s, fusing_after_both, status.fusing)?;
    Ok(())
}

/// Serves the coordinator on two loopback listeners through the real edge: plain and TLS.
async fn listen(c: &Arc<Coordinator>, tmp: &Path) -> anyhow::Result<(String, String)> {
    let certs = tmp.join("certs");
    pki::generate(&pki::CertArgs {
        out: certs.clone(),
        hosts: vec!["127.0.0.1".into()],
        clients: vec![],
    })?;
    let tls = Tls::load(TlsFiles {
        cert: certs.join("server.pem"),
        key: certs.join("server-key.pem"),
        client_ca: None,
    })?;
    let mut urls = Vec::new();
    for tls in [None, Some(tls)] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        urls.push(format!("{scheme}://{}", listener.local_addr()?));
        let config = EdgeConfig {
            tls,
            ..EdgeConfig::default()
        };
        let (app, metrics) = (routes::router(c.clone()), c.metrics.clone());
        tokio::spawn(edge::serve(
            listener,
            app,
            config,
            metrics,
            std::future::pending(),
        ));
    }
    Ok((urls.remove(0), urls.remove(0)))
}

/// Creates site `i`'s token and diff, and announces the diff.
async fn site(
    client: &reqwest::Client,
    url: &str,
    admin: &str,
    tmp: &Path,
    layout: &[(String, Vec<usize>)],
    base_ref: &BaseRef,
    i: usize,
) -> anyhow::Result<Site> {
    let site = new_site(client, url, admin, tmp, layout, base_ref, i).await?;
    announce(client, url, &site).await?;
    Ok(site)
}

/// Creates site `i`'s token and its diff under `tmp/site-{i}` (not announced yet).
async fn new_site(
    client: &reqwest::Client,
    url: &str,
    admin: &str,
    tmp: &Path,
    layout: &[(String, Vec<usize>)],
    base_ref: &BaseRef,
    i: usize,
) -> anyhow::Result<Site> {
    let name = format!("site-{i}");
    let token: serde_json::Value = client
        .post(format!("{url}/v1/admin/tokens"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"role": "contributor", "contributor": name}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = token["token"].as_str().context("token")?.to_string();
    let dir = tmp.join(&name);
    let (d, layout, base_ref) = (dir.clone(), layout.to_vec(), base_ref.clone());
    let mut manifest = tokio::task::spawn_blocking(move || {
        synthetic::write_diff(&d, &base_ref, &layout, Encoding::Bf16, i)
    })
    .await??;
    manifest.contributor = name.clone();
    Ok(Site {
        name,
        token,
        dir,
        manifest,
    })
}

/// Announces `site`'s diff.
async fn announce(client: &reqwest::Client, url: &str, site: &Site) -> anyhow::Result<()> {
    client
        .post(format!("{url}/v1/contributions"))
        .bearer_auth(&site.token)
        .body(site.manifest.to_json())
        .send()
        .await?
        .error_for_status()
        .context("announce")?;
    Ok(())
}

/// Waits until `c` has moved `latest` past iteration 0 (at most `limit`); answers the seconds taken.
async fn wait_first_fusion(c: &Coordinator, limit: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    while c.state.read().await.latest.iteration < 1 {
        anyhow::ensure!(started.elapsed() < limit, "the round did not close");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// PUTs `site`'s whole diff, or — throttled to `mb_per_s` — its first 90 % as a `Content-Range`
/// chunk, so that a throttled upload streams for as long as it runs but never completes.
async fn upload(
    client: &reqwest::Client,
    url: &str,
    site: &Site,
    mb_per_s: Option<f64>,
) -> anyhow::Result<reqwest::Response> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(site.dir.join(DIFF_FILE)).await?;
    let total = site.manifest.diff_bytes;
    let request = client
        .put(format!("{url}/v1/contributions/{}/diff", site.name))
        .bearer_auth(&site.token);
    let request = match mb_per_s {
        None => request
            .header(reqwest::header::CONTENT_LENGTH, total)
            .body(reqwest::Body::wrap_stream(chunks(file))),
        Some(rate) => {
            let part = total * 9 / 10;
            let started = Instant::now();
            let mut sent = 0usize;
            let body = chunks(file.take(part)).then(move |chunk| {
                if let Ok(c) = &chunk {
                    sent += c.len();
                }
                let due = Duration::from_secs_f64(sent as f64 / (rate * 1e6));
                async move {
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                    chunk
                }
            });
            request
                .header(reqwest::header::CONTENT_LENGTH, part)
                .header(
                    reqwest::header::CONTENT_RANGE,
                    format!("bytes 0-{}/{total}", part - 1),
                )
                .body(reqwest::Body::wrap_stream(body))
        }
    };
    Ok(request.send().await?)
}

/// A reader as a stream of 256 KiB chunks.
fn chunks(
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures::stream::unfold(reader, |mut reader| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 << 10];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), reader))
            }
            Err(e) => Some((Err(e), reader)),
        }
    })
}

/// Starts throttled uploads of every site in `sites`, restarting each when it ends, until aborted.
fn start_uploads(
    client: &reqwest::Client,
    url: &str,
    sites: &[Site],
    mb_per_s: f64,
) -> Vec<tokio::task::JoinHandle<()>> {
    sites
        .iter()
        .map(|s| {
            let (client, url) = (client.clone(), url.to_string());
            let site = Site {
                name: s.name.clone(),
                token: s.token.clone(),
                dir: s.dir.clone(),
                manifest: s.manifest.clone(),
            };
            tokio::spawn(async move {
                // Until aborted; refusals (the previous upload still ending, the round fusing) are
                // retried after a pause.
                loop {
                    let _ = upload(&client, &url, &site, Some(mb_per_s)).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        })
        .collect()
}

async fn round(client: &reqwest::Client, url: &str) -> anyhow::Result<RoundStatus> {
    Ok(client
        .get(format!("{url}/v1/round"))
        .send()
        .await?
        .json()
        .await?)
}

async fn wait_fusing(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while !round(client, url).await?.fusing {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the fusion did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn report(
    args: &LoadArgs,
    results: &[(&str, &str, WrkRun)],
    fusion_s: f64,
    fusing_after_both: bool,
    fusing_after_fusion: bool,
) -> anyhow::Result<()> {
    println!(
        "wrk -t{} -c{} -d{}s on loopback; {:.0} M-parameter base; {} uploads at {} MB/s; fusion of {} bf16 diffs",
        args.threads,
        args.connections,
        args.seconds,
        args.params as f64 / 1e6,
        args.uploads,
        args.upload_mb_per_s,
        args.contributions
    );
    println!(
        "{:<8} {:<16} {:>10} {:>9} {:>9} {:>7}",
        "phase", "target", "req/s", "p50 ms", "p99 ms", "errors"
    );
    for (phase, target, r) in results {
        println!(
            "{phase:<8} {target:<16} {:>10.0} {:>9.2} {:>9.2} {:>7}",
            r.rps, r.p50_ms, r.p99_ms, r.errors
        );
    }
    println!(
        "fusion + publish took {fusion_s:.1} s; still fusing at the end of the `both` runs: \
         {fusing_after_both}, of the `fusion` runs: {fusing_after_fusion}"
    );
    let json = serde_json::json!({
        "params": args.params, "contributions": args.contributions, "uploads": args.uploads,
        "upload_mb_per_s": args.upload_mb_per_s, "connections": args.connections,
        "threads": args.threads, "seconds": args.seconds, "fusion_seconds": fusion_s,
        "fusing_after_both": fusing_after_both, "fusing_after_fusion": fusing_after_fusion,
        "runs": results.iter().map(|(p, t, r)| serde_json::json!({"phase": p, "target": t, "result": r})).collect::<Vec<_>>(),
    });
    println!("{json}");
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
