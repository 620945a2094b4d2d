//! `coldfuse-coordinator bench round`: what closing a round costs on a real object store, by model
//! size, number of contributions and strategy. Each case is a fresh deployment of a synthetic base
//! (f32) with N bf16 diffs uploaded one after another over HTTP, the round closing at quorum; it
//! measures, from the last acceptance to `latest` moving, the time, the bytes read from the store
//! and the peak RSS (beside the RSS at that acceptance), and over the whole case the peak local disk
//! (the coordinator's work directory). Two
//! references run on the same store right after: one read plus one write of the model, and one
//! read of the N diffs.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use coldfuse_shared::{
    api::{keys, DeploymentConfig},
    diff::{BASE_WEIGHTS, DIFF_FILE},
    fusion::FusionConfig,
    synthetic,
};

use super::{deploy, site, upload, wait_first_fusion, Deployed};
use crate::Store;

/// Settings of the round benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct RoundArgs {
    /// Parameters of the synthetic bases (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "125000000")]
    pub params: Vec<usize>,
    /// Contributions per round (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "2,8,32")]
    pub contributions: Vec<usize>,
    /// Fusion strategies (comma-separated; `weighted` takes the all-diffs path with mean's arithmetic).
    #[arg(long, value_delimiter = ',', default_value = "mean,median")]
    pub strategy: Vec<String>,
    /// Store URL; each case gets its own prefix under it, deleted afterwards (default: a `file://`
    /// store in the temporary directory).
    #[arg(long)]
    pub store: Option<String>,
    /// Local directory for work directories and synthetic files (default: the system's).
    #[arg(long)]
    pub tmp: Option<PathBuf>,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One measured round.
#[derive(Debug, Clone, serde::Serialize)]
struct Case {
    params: usize,
    strategy: String,
    contributions: usize,
    model_bytes: u64,
    diff_bytes: u64,
    /// Last acceptance to `latest` moving.
    close_s: f64,
    /// Bytes read from the store in that time.
    close_store_read_bytes: u64,
    /// Resident memory of the process at the last acceptance (the synthetic sites run in-process
    /// before: their freed heap may still count).
    rss_at_accept_bytes: u64,
    /// Peak resident memory from the last acceptance to `latest` moving.
    peak_rss_bytes: u64,
    /// Peak size of the coordinator's work directory over the case.
    peak_disk_bytes: u64,
    /// One read plus one write of the model on the same store.
    ref_model_rw_s: f64,
    /// One read of the N diffs on the same store.
    ref_diffs_read_s: f64,
}

/// Runs every case: prints a table and one JSON line.
pub async fn run(args: RoundArgs) -> anyhow::Result<()> {
    let tmp = match &args.tmp {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let store_url = match &args.store {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => format!("file://{}", tmp.path().join("store").display()),
    };
    let mut cases = Vec::new();
    for &params in &args.params {
        let layout = synthetic::roberta_like(params);
        let source = tmp.path().join(format!("base-{params}"));
        synthetic::write_base(&source, &layout)?;
        for &n in &args.contributions {
            for strategy in &args.strategy {
                eprintln!(
                    "{:.0} M parameters, {n} contributions, {strategy} ...",
                    params as f64 / 1e6
                );
                let case = measure(tmp.path(), &store_url, &source, &layout, n, strategy).await?;
                eprintln!("{}", serde_json::to_string(&case)?);
                cases.push(case);
            }
        }
        std::fs::remove_dir_all(&source)?;
    }
    report(&store_url, &cases, args.out.as_deref())
}

/// One deployment, N uploads, the close, the references; the case's store prefix is deleted after.
async fn measure(
    tmp: &Path,
    store_url: &str,
    source: &Path,
    layout: &[(String, Vec<usize>)],
    n: usize,
    strategy: &str,
) -> anyhow::Result<Case> {
    let params: usize = layout
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let name = format!("round-{params}-{strategy}-{n}-{}", std::process::id());
    let store = Store::open(&format!("{store_url}/{name}"))?;
    let config = DeploymentConfig {
        quorum: n,
        fusion: FusionConfig {
            strategy: strategy.parse()?,
            ..FusionConfig::default()
        },
        ..DeploymentConfig::default()
    };
    let case_dir = tmp.join(&name);
    let work = case_dir.join("work");
    std::fs::create_dir_all(&case_dir)?;
    let Deployed {
        coordinator: c,
        fusion,
        plain: url,
        admin,
        base_ref,
        ..
    } = deploy(&store, source, config, &case_dir).await?;
    let client = reqwest::Client::new();
    let sampler = Sampler::start(work.clone());
    let mut diff_bytes = 0;
    for i in 0..n {
        let s = site(&client, &url, &admin, &case_dir, layout, &base_ref, i).await?;
        upload(&client, &url, &s, None).await?.error_for_status()?;
        diff_bytes = s.manifest.diff_bytes;
        std::fs::remove_dir_all(&s.dir)?;
    }
    let read_before = store.bytes_read();
    let rss_at_accept_bytes = rss_bytes();
    sampler.reset_rss();
    let close_s = wait_first_fusion(&c, Duration::from_secs(7200)).await?;
    let close_store_read_bytes = store.bytes_read() - read_before;
    let (peak_rss_bytes, peak_disk_bytes) = sampler.stop();
    fusion.abort();
    let model_bytes = std::fs::metadata(source.join(BASE_WEIGHTS))?.len();
    let scratch = case_dir.join("reference");
    std::fs::create_dir_all(&scratch)?;
    let ref_model_rw_s = {
        let started = Instant::now();
        let file = scratch.join("model");
        store
            .get_file(&keys::base_file(0, BASE_WEIGHTS), &file)
            .await?;
        store.put_file("reference/model", &file).await?;
        std::fs::remove_file(&file)?;
        started.elapsed().as_secs_f64()
    };
    let ref_diffs_read_s = {
        let started = Instant::now();
        for i in 0..n {
            let file = scratch.join("diff");
            let key = keys::contribution_file(1, &format!("site-{i}"), DIFF_FILE);
            store.get_file(&key, &file).await?;
            std::fs::remove_file(&file)?;
        }
        started.elapsed().as_secs_f64()
    };
    drop(c);
    delete_all(&store).await?;
    std::fs::remove_dir_all(&case_dir)?;
    Ok(Case {
        params,
        strategy: strategy.to_string(),
        contributions: n,
        model_bytes,
        diff_bytes,
        close_s,
        close_store_read_bytes,
        rss_at_accept_bytes,
        peak_rss_bytes,
        peak_disk_bytes,
        ref_model_rw_s,
        ref_diffs_read_s,
    })
}

/// Deletes every object of a case's deployment.
async fn delete_all(store: &Store) -> anyhow::Result<()> {
    for prefix in [
        "bases",
        "rounds",
        "iterations",
        "tokens",
        "signing",
        "reference",
        "gate",
    ] {
        for key in store.list(prefix).await? {
            store.delete(&key).await?;
        }
    }
    for key in [keys::DEPLOYMENT, keys::LATEST] {
        store.delete(key).await?;
    }
    Ok(())
}

/// Samples the process's resident memory and a directory's allocated size every 20 ms.
struct Sampler {
    stop: Arc<AtomicBool>,
    peaks: Arc<(AtomicU64, AtomicU64)>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(dir: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let (s, p) = (stop.clone(), peaks.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.0.fetch_max(rss_bytes(), Ordering::Relaxed);
                p.1.fetch_max(allocated(&dir), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            peaks,
            thread,
        }
    }

    /// Starts the RSS peak again from now.
    fn reset_rss(&self) {
        self.peaks.0.store(rss_bytes(), Ordering::Relaxed);
    }

    /// Peak RSS and peak directory size, in bytes.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        (
            self.peaks.0.load(Ordering::Relaxed),
            self.peaks.1.load(Ordering::Relaxed),
        )
    }
}

/// The process's resident set now (`VmRSS`), 0 where /proc is absent.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes allocated on disk under `dir` (sparse files count what they hold, not their length).
fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => allocated(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn report(store: &str, cases: &[Case], out: Option<&Path>) -> anyhow::Result<()> {
    let gb = |b: u64| format!("{:.2}", b as f64 / 1e9);
    println!("round close on {store}: synthetic f32 base, bf16 diffs, uploaded one by one");
    let head = [
        "params",
        "strategy",
        "N",
        "close s",
        "ref RW s",
        "÷ RW",
        "ref N s",
        "÷ N",
        "read GB",
        "RSS₀ GB",
        "RSS GB",
        "disk GB",
    ];
    println!("{}", head.map(|h| format!("{h:>9}")).join(" "));
    for c in cases {
        let row = [
            format!("{:.0}M", c.params as f64 / 1e6),
            c.strategy.clone(),
            c.contributions.to_string(),
            format!("{:.2}", c.close_s),
            format!("{:.2}", c.ref_model_rw_s),
            format!("{:.2}", c.close_s / c.ref_model_rw_s),
            format!("{:.2}", c.ref_diffs_read_s),
            format!("{:.2}", c.close_s / c.ref_diffs_read_s),
            gb(c.close_store_read_bytes),
            gb(c.rss_at_accept_bytes),
            gb(c.peak_rss_bytes),
            gb(c.peak_disk_bytes),
        ];
        println!("{}", row.map(|v| format!("{v:>9}")).join(" "));
    }
    let json = serde_json::json!({"bench": "round", "store": store, "cases": cases});
    println!("{json}");
    if let Some(out) = out {
        std::fs::write(out, serde_json::to_string_pretty(&json)?).context("writing --out")?;
    }
    Ok(())
}
