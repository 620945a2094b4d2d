//! `coldfuse-coordinator`: initialise a deployment from a model dir, then serve the ColD Fusion API.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use coldfuse_coordinator::{fusion_task, init, routes, signing, upload, Coordinator, Store};
use coldfuse_shared::{
    api::{
        keys, DeploymentConfig, GateConfig, DEFAULT_EXCLUDE_ABOVE_MEDIAN, DEFAULT_MAX_RELATIVE_NORM,
    },
    fusion::{FusionConfig, ServerOptimizer, StrategyConfig},
};

/// The coldfuse coordinator: tracks iterations, takes contributors' diffs, fuses and publishes bases.
#[derive(Debug, Parser)]
#[command(name = "coldfuse-coordinator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a deployment in an empty store from a Hugging Face model dir (iteration 0) and print
    /// the first admin token.
    Init {
        /// The original model directory (config.json, weights, tokenizer).
        #[arg(long)]
        base: PathBuf,
        /// The original model's name for lineage and model cards, e.g.
        /// sentence-transformers/all-MiniLM-L6-v2 (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
        /// Store URL: file:///dir, s3://bucket/prefix (AWS_* env vars), memory://.
        #[arg(long, env = "COLDFUSE_STORE")]
        store: String,
        /// Accepted contributions that trigger a fusion.
        #[arg(long, default_value_t = 3)]
        quorum: usize,
        /// Fewest contributions fused at the deadline.
        #[arg(long, default_value_t = 1)]
        min_contributions: usize,
        /// Seconds after the round's first accepted contribution at which it is fused anyway.
        #[arg(long)]
        deadline_secs: Option<u64>,
        /// Fusion strategy: mean, weighted, median, trimmed-mean:trim=F, task-arithmetic:lambda=L,
        /// ties:density=D[,lambda=L], dare:drop=P[,seed=S,lambda=L].
        #[arg(long, default_value = "mean")]
        strategy: StrategyConfig,
        /// Scale down any diff whose L2 norm exceeds this.
        #[arg(long)]
        clip_norm: Option<f64>,
        /// Scale down any diff whose L2 norm exceeds K × the median of the round's diff norms
        /// (recorded in lineage; off by default: outliers are excluded instead).
        #[arg(long, value_name = "K")]
        clip_to_median: Option<f64>,
        /// Leave out of the fusion (quarantine as `norm_outlier`) any accepted diff whose L2 norm
        /// exceeds K × the median of the round's accepted norms (poisoning defence; 0 turns it
        /// off).
        #[arg(long, value_name = "K", default_value_t = DEFAULT_EXCLUDE_ABOVE_MEDIAN)]
        exclude_above_median: f64,
        /// Reject diffs whose L2 norm exceeds this fraction of the base body's L2 norm
        /// (poisoning defence; 0 turns it off).
        #[arg(long, value_name = "R", default_value_t = DEFAULT_MAX_RELATIVE_NORM)]
        max_relative_norm: f64,
        /// Server optimiser over the fused update: none (the paper), momentum:lr=L,beta=B (FedAvgM),
        /// adam:lr=L,beta1=B1,beta2=B2,tau=T (FedAdam).
        #[arg(long, default_value = "none")]
        server_optimizer: ServerOptimizer,
        /// Largest accepted diff in bytes.
        #[arg(long, default_value_t = 8 << 30)]
        max_diff_bytes: u64,
        /// Promotion gate: a fused base becomes latest only once held-out evals (`coldfuse gate
        /// evaluate`) show no drop beyond this (e.g. 0.02 accuracy); else it waits for the operator.
        #[arg(long)]
        gate_tolerance: Option<f64>,
        /// Evals the gate waits for before deciding.
        #[arg(long, default_value_t = 1, requires = "gate_tolerance")]
        gate_min_evals: usize,
        /// Require a token to read bases, lineage and round status.
        #[arg(long)]
        private: bool,
        /// Write the admin token to this file (mode 600) instead of printing it.
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// Sign receipts with this key file (`keygen`); default: a new key written (mode 600) to
        /// the coordinator's config dir ($COLDFUSE_COORDINATOR_HOME, $XDG_CONFIG_HOME/coldfuse-coordinator
        /// or ~/.config/coldfuse-coordinator), where `serve` finds it. The store gets only its public half.
        #[arg(long, env = "COLDFUSE_SIGNING_KEY")]
        signing_key: Option<PathBuf>,
    },
    /// Write a new Ed25519 receipt key to a file (mode 600) for `init/serve --signing-key`.
    Keygen {
        /// The key file to create (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Benchmark: API latency and throughput on loopback while a real fusion runs, against idle.
    Bench(coldfuse_coordinator::bench::LoadArgs),
    /// Serve the API.
    Serve {
        /// Store URL.
        #[arg(long, env = "COLDFUSE_STORE")]
        store: String,
        /// Address to listen on.
        #[arg(long, env = "COLDFUSE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Local work directory (base cache, uploads in progress).
        #[arg(long, env = "COLDFUSE_WORK")]
        work: Option<PathBuf>,
        /// The receipt key file (default: the one `init` wrote to the coordinator's config dir).
        #[arg(long, env = "COLDFUSE_SIGNING_KEY")]
        signing_key: Option<PathBuf>,
        /// Seconds after which the spool of an upload that received nothing is deleted (the upload
        /// then starts again from byte 0).
        #[arg(long, env = "COLDFUSE_UPLOAD_IDLE_SECS", default_value_t = 86_400)]
        upload_idle_secs: u64,
        /// Seconds an upload body may send nothing before the request ends with 408 (the bytes so
        /// far stay; the upload resumes) and releases the contributor's upload slot.
        #[arg(long, env = "COLDFUSE_UPLOAD_BODY_IDLE_SECS", default_value_t = 60)]
        upload_body_idle_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    coldfuse_shared::logging::init_stderr();
    let runtime = tokio::runtime::Runtime::new()?;
    match Cli::parse().command {
        Command::Init {
            base,
            name,
            store,
            quorum,
            min_contributions,
            deadline_secs,
            strategy,
            clip_norm,
            clip_to_median,
            exclude_above_median,
            max_relative_norm,
            server_optimizer,
            max_diff_bytes,
            private,
            admin_token_file,
            signing_key,
            gate_tolerance,
            gate_min_evals,
        } => runtime.block_on(async {
            let config = DeploymentConfig {
                fusion: FusionConfig {
                    strategy,
                    clip_norm,
                    clip_to_median,
                    ..DeploymentConfig::default().fusion
                },
                exclude_above_median: (exclude_above_median != 0.0).then_some(exclude_above_median),
                max_relative_norm: (max_relative_norm != 0.0).then_some(max_relative_norm),
                quorum,
                min_contributions,
                deadline_secs,
                max_diff_bytes,
                public_read: !private,
                server_optimizer,
                gate: gate_tolerance.map(|tolerance| GateConfig {
                    tolerance,
                    min_evals: gate_min_evals,
                }),
                ..DeploymentConfig::default()
            };
            let store = Store::open(&store)?;
            let (signer, key_path) = match &signing_key {
                Some(path) => (signing::read_key_file(path)?, None),
                None => {
                    // Written before the deployment exists (a failed init leaves no keyless store),
                    // and only into an empty store (a key file already there is a dead deployment's).
                    if store
                        .get_json::<serde_json::Value>(keys::DEPLOYMENT)
                        .await?
                        .is_some()
                    {
                        anyhow::bail!("{} already holds a deployment", store.url());
                    }
                    let path = signing::default_key_path(store.url());
                    let signer = coldfuse_shared::api::ReceiptSigner::generate();
                    signing::replace_key(&path, &signer)?;
                    (signer, Some(path))
                }
            };
            let options = init::InitOptions {
                signing_key: Some(signer),
                name,
            };
            let done = init::init(&store, &base, config, &options).await?;
            if let Some(path) = key_path {
                eprintln!(
                    "receipt key written to {} (mode 600; `serve` reads it from there, or pass \
                     --signing-key)",
                    path.display()
                );
            }
            eprintln!(
                "initialised {} with {} ({}), base sha256 {}, receipt key {}",
                store.url(),
                base.display(),
                done.architecture,
                done.base_sha256,
                done.signing_key.key_id
            );
            match admin_token_file {
                Some(path) => {
                    write_secret(&path, &done.admin_token)?;
                    eprintln!("admin token written to {}", path.display());
                }
                None => println!("{}", done.admin_token),
            }
            Ok(())
        }),
        Command::Keygen { out } => {
            let public = signing::write_key_file(&out)?;
            eprintln!(
                "receipt key {} written to {}; public key {}",
                public.key_id,
                out.display(),
                public.public_key
            );
            Ok(())
        }
        Command::Serve {
            store,
            listen,
            work,
            signing_key,
            upload_idle_secs,
            upload_body_idle_secs,
        } => runtime.block_on(serve(
            &store,
            &listen,
            work,
            signing_key,
            Duration::from_secs(upload_idle_secs.max(1)),
            Duration::from_secs(upload_body_idle_secs.max(1)),
        )),
        Command::Bench(args) => runtime.block_on(coldfuse_coordinator::bench::run(args)),
    }
}

async fn serve(
    store: &str,
    listen: &str,
    work: Option<PathBuf>,
    signing_key: Option<PathBuf>,
    upload_idle: Duration,
    upload_body_idle: Duration,
) -> anyhow::Result<()> {
    let store = Store::open(store)?;
    let work = work.unwrap_or_else(|| {
        let key = &coldfuse_shared::hash::sha256_bytes(store.url().as_bytes())[..12];
        std::env::temp_dir().join(format!("coldfuse-coordinator-{key}"))
    });
    let signing_key = signing_key.or_else(|| {
        let default = signing::default_key_path(store.url());
        default.is_file().then_some(default)
    });
    let signer = signing_key
        .as_deref()
        .map(signing::read_key_file)
        .transpose()?;
    let coordinator = Coordinator::load(store, &work, signer).await?;
    coordinator.set_upload_body_idle(upload_body_idle);
    tokio::spawn(fusion_task::run(coordinator.clone()));
    coordinator.wake.notify_one();
    let sweeper = coordinator.clone();
    tokio::spawn(async move {
        let every = (upload_idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
        loop {
            tokio::time::sleep(every).await;
            upload::expire_idle_spools(&sweeper.uploads, &sweeper.work, upload_idle).await;
        }
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!("listening on {}", listener.local_addr()?);
    axum::serve(listener, routes::router(coordinator))
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, format!("{secret}\n").as_bytes())?;
    Ok(())
}
