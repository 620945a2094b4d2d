//! `coldfuse-coordinator`: initialise a deployment from a model dir, then serve the ColD Fusion API.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use coldfuse_coordinator::{init, signing, Store};
use coldfuse_shared::{
    api::{
        keys, DeploymentConfig, GateConfig, SiteGate, SiteRule, DEFAULT_EXCLUDE_ABOVE_MEDIAN,
        DEFAULT_MAX_RELATIVE_NORM,
    },
    fusion::{FusionConfig, ServerOptimizer, StrategyConfig},
    logging::LogFormat,
};

/// The coldfuse coordinator: tracks iterations, takes contributors' diffs, fuses and publishes bases.
#[derive(Debug, Parser)]
#[command(name = "coldfuse-coordinator", version, about)]
struct Cli {
    /// Log format on stderr: text or json (one object per line, with the request span's fields).
    #[arg(
        long,
        global = true,
        env = "COLDFUSE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
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
        /// Evals the gate waits for before deciding (0 allowed with --gate-site-reports).
        #[arg(long, default_value_t = 1, requires = "gate_tolerance")]
        gate_min_evals: usize,
        /// Site evaluation: the gate also waits for this many contributor sites' reports on each
        /// candidate (`coldfuse evaluate`), or for --gate-site-deadline-secs.
        #[arg(long, requires = "gate_tolerance")]
        gate_site_reports: Option<usize>,
        /// Seconds after a fusion after which the gate decides on the site reports it has (none: held).
        #[arg(long, default_value_t = 86_400, requires = "gate_site_reports")]
        gate_site_deadline_secs: u64,
        /// How site reports combine: median (no minority of sites decides) or any (each site can hold).
        #[arg(long, default_value = "median", requires = "gate_site_reports")]
        gate_site_rule: SiteRule,
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
    Bench(coldfuse_coordinator::bench::BenchArgs),
    /// Serve the API.
    Serve(coldfuse_coordinator::server::ServeArgs),
    /// Write a private CA, a server certificate for `--host`s and optional site client
    /// certificates (PEM) for `serve --tls-cert/--tls-key/--client-ca` (tests, compose, trials).
    TlsCert(coldfuse_coordinator::edge::pki::CertArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _log = coldfuse_shared::logging::init_server(cli.log_format);
    let runtime = tokio::runtime::Runtime::new()?;
    let result = run(&runtime, cli.command);
    // Past the shutdown deadline nothing is waited for: a fusion on a blocking thread is cut like a
    // crash, which the commit protocol is built to survive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

fn run(runtime: &tokio::runtime::Runtime, command: Command) -> anyhow::Result<()> {
    match command {
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
            gate_site_reports,
            gate_site_deadline_secs,
            gate_site_rule,
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
                    sites: gate_site_reports.map(|min_reports| SiteGate {
                        min_reports,
                        deadline_secs: gate_site_deadline_secs,
                        rule: gate_site_rule,
                    }),
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
        Command::Serve(args) => runtime.block_on(coldfuse_coordinator::server::serve(args)),
        Command::TlsCert(args) => {
            for path in coldfuse_coordinator::edge::pki::generate(&args)? {
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Bench(args) => runtime.block_on(coldfuse_coordinator::bench::run(args)),
    }
}

fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use coldfuse_shared::private_file::{write_private, Existing};
    write_private(path, format!("{secret}\n").as_bytes(), Existing::Replace)
        .with_context(|| format!("writing {}", path.display()))
}
