//! `coldfuse-coordinator bench`: API latency and throughput on loopback while a real fusion runs,
//! against the same load on an idle coordinator in the same run.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use coldfuse_shared::{
    api::{BaseManifest, DeploymentConfig, RoundStatus},
    diff::{BaseRef, Encoding, DIFF_FILE},
    synthetic,
};

use crate::{init, routes, Coordinator, Store};

/// Settings of the load benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Parameters of the synthetic base model.
    #[arg(long, default_value_t = 125_000_000)]
    pub params: usize,
    /// Contributions fused.
    #[arg(long, default_value_t = 4)]
    pub contributions: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds of load on the idle coordinator.
    #[arg(long, default_value_t = 3)]
    pub idle_secs: u64,
}

/// Latencies of one phase.
struct Phase {
    latencies: Vec<Duration>,
    seconds: f64,
    errors: usize,
}

impl Phase {
    fn quantile(&self, q: f64) -> f64 {
        let mut v: Vec<f64> = self
            .latencies
            .iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    }

    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.latencies.len(),
            "errors": self.errors,
            "rps": self.rps(),
            "p50_ms": self.quantile(0.5),
            "p99_ms": self.quantile(0.99),
        })
    }
}

/// Runs the benchmark and prints a table and one JSON line.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    eprintln!(
        "writing a {:.0} M-parameter synthetic base and {} diffs ...",
        args.params as f64 / 1e6,
        args.contributions
    );
    let layout = synthetic::roberta_like(args.params);
    let source = tmp.path().join("source");
    synthetic::write_base(&source, &layout)?;
    let store = Store::open(&format!("file://{}", tmp.path().join("store").display()))?;
    let config = DeploymentConfig {
        quorum: usize::MAX,
        ..DeploymentConfig::default()
    };
    let done = init::init(&store, &source, config, &Default::default()).await?;
    let admin = done.admin_token;
    let coordinator = Coordinator::load(store, &tmp.path().join("work"), Some(done.signer)).await?;
    tokio::spawn(crate::fusion_task::run(coordinator.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, routes::router(coordinator)).await });
    let client = reqwest::Client::new();
    let base: BaseManifest = client
        .get(format!("{url}/v1/bases/latest"))
        .send()
        .await?
        .json()
        .await?;
    let base_ref = BaseRef {
        id: "bench".into(),
        sha256: base.base_sha256.clone(),
    };
    for i in 0..args.contributions {
        let name = format!("site-{i}");
        let token: serde_json::Value = client
            .post(format!("{url}/v1/admin/tokens"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"role": "contributor", "contributor": name}))
            .send()
            .await?
            .json()
            .await?;
        let token = token["token"].as_str().context("token")?.to_string();
        let dir = tmp.path().join(&name);
        let (layout, base_ref) = (layout.clone(), base_ref.clone());
        let (d, mut manifest) = (dir.clone(), None);
        manifest.replace(
            tokio::task::spawn_blocking(move || {
                synthetic::write_diff(&d, &base_ref, &layout, Encoding::Bf16, i)
            })
            .await??,
        );
        let mut manifest = manifest.context("manifest")?;
        manifest.contributor = name.clone();
        client
            .post(format!("{url}/v1/contributions"))
            .bearer_auth(&token)
            .body(manifest.to_json())
            .send()
            .await?
            .error_for_status()?;
        let file = tokio::fs::File::open(dir.join(DIFF_FILE)).await?;
        client
            .put(format!("{url}/v1/contributions/{name}/diff"))
            .bearer_auth(&token)
            .body(reqwest::Body::from(file))
            .send()
            .await?
            .error_for_status()
            .context("upload")?;
    }
    println!(
        "load: {} clients on loopback, GET /v1/round and GET /v1/bases/0/files/config.json",
        args.clients
    );
    let idle = load(
        &client,
        &url,
        args.clients,
        || false,
        Some(Duration::from_secs(args.idle_secs)),
    )
    .await;
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (client, url, done) = (client.clone(), url.clone(), done.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let r: Result<RoundStatus, _> = async {
                    client
                        .get(format!("{url}/v1/round"))
                        .send()
                        .await?
                        .json()
                        .await
                }
                .await;
                if r.is_ok_and(|r| r.iteration == 2) {
                    done.store(true, Ordering::Relaxed);
                    return started.elapsed().as_secs_f64();
                }
            }
        })
    };
    client
        .post(format!("{url}/v1/admin/fuse"))
        .bearer_auth(&admin)
        .send()
        .await?
        .error_for_status()?;
    let flag = done.clone();
    let busy = load(
        &client,
        &url,
        args.clients,
        move || flag.load(Ordering::Relaxed),
        None,
    )
    .await;
    let fusion_s = watcher.await?;
    for (name, p) in [("idle", &idle), ("during fusion", &busy)] {
        println!(
            "  {name:>13}: {:>7.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} requests, {} errors)",
            p.rps(),
            p.quantile(0.5),
            p.quantile(0.99),
            p.latencies.len(),
            p.errors
        );
    }
    println!(
        "  fusion + publish took {fusion_s:.2} s; rps during / idle: {:.2}×",
        busy.rps() / idle.rps()
    );
    let json = serde_json::json!({
        "params": args.params, "contributions": args.contributions, "clients": args.clients,
        "fusion_seconds": fusion_s, "idle": idle.json(), "during_fusion": busy.json(),
        "rps_ratio": busy.rps() / idle.rps(),
    });
    println!("{json}");
    Ok(())
}

/// Runs `clients` request loops until `stop()` or `limit`.
async fn load(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    stop: impl Fn() -> bool + Clone + Send + 'static,
    limit: Option<Duration>,
) -> Phase {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, url, stop) = (client.clone(), url.to_string(), stop.clone());
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0);
                let mut k = c;
                while !stop() && limit.is_none_or(|l| started.elapsed() < l) {
                    let path = if k % 2 == 0 {
                        "/v1/round"
                    } else {
                        "/v1/bases/0/files/config.json"
                    };
                    k += 1;
                    let t = Instant::now();
                    let ok = match client.get(format!("{url}{path}")).send().await {
                        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                        _ => false,
                    };
                    if ok {
                        lat.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut phase = Phase {
        latencies: Vec::new(),
        seconds: 0.0,
        errors: 0,
    };
    for t in tasks {
        if let Ok((lat, errors)) = t.await {
            phase.latencies.extend(lat);
            phase.errors += errors;
        }
    }
    phase.seconds = started.elapsed().as_secs_f64();
    phase
}
