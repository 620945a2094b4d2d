//! `coldfuse`: the contributor CLI. Pull the shared base, fine-tune it on local data, submit the body
//! diff, or run that loop; plus model inspection and benchmarks.

mod bench;
mod client;
mod demo;
mod eval;
mod gate;
mod inspect;
mod progress;
mod pull;
mod receipt;
mod retry;
mod run_loop;
mod settings;
mod status;
mod submit;
mod train_cmd;
mod tuning;
mod verify;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{
    client::Client,
    settings::{ConnectArgs, Settings, SettingsFile},
    train_cmd::{BaseSource, DataArgs, DiffArgs, HyperArgs},
};

/// coldfuse: collaborative fine-tuning of one shared encoder (ColD Fusion), contributor side.
///
/// A site pulls the current fused base, fine-tunes it on its own labelled data, and uploads only the
/// body's weight diff; the coordinator fuses the diffs of all sites into the next base.
#[derive(Debug, Parser)]
#[command(name = "coldfuse", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a coordinator URL and token, and remember them for later commands.
    Login {
        /// Contributor id to write manifests as (default: the token's).
        #[arg(long)]
        contributor: Option<String>,
    },
    /// Show the current round, who you are, and your contribution to it.
    Status,
    /// List the published bases: parent, contributors, fusion strategy, update norm, hash.
    Lineage,
    /// Download a fused base (the latest by default) into the cache, verified.
    Pull {
        /// Base iteration (default: the latest).
        #[arg(long)]
        iteration: Option<u64>,
        /// Also write it as a plain Hugging Face model dir here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fine-tune a base on local data and write the contribution (diff + manifest) to --out.
    Train(TrainCmd),
    /// Upload a contribution written by `train`, resuming an interrupted upload; prints the verdict.
    Submit {
        /// The contribution directory (`train --out`).
        dir: PathBuf,
        /// Upload chunk size in MiB.
        #[arg(long, default_value_t = 8)]
        chunk_mib: u64,
    },
    /// The contributor loop: wait for a new base, pull, train, submit; for N rounds or forever.
    Run(RunCmd),
    /// ColD Fusion end to end on this machine: embedded coordinator, contributors on real tasks,
    /// several fused iterations, then every base scored on a held-out task.
    Demo(demo::DemoArgs),
    /// Score bases as starting points for a held-out task (linear probe + few-shot, several seeds).
    Eval(eval::EvalArgs),
    /// Re-fuse a committed iteration from the inputs its lineage records and check that the published
    /// base is the same bit for bit (or name the first tensor that differs).
    Verify(verify::VerifyArgs),
    /// The promotion gate (operator): evaluate candidates on held-out tasks, promote or discard.
    Gate {
        #[command(subcommand)]
        which: gate::GateCommand,
    },
    /// Signed receipts: check one offline against the coordinator's key, or fetch a fused one.
    Receipt {
        #[command(subcommand)]
        which: receipt::ReceiptCommand,
    },
    /// Embed sentences with a model dir (mean pooling) and print their cosine similarities.
    Embed {
        /// Hugging Face model directory (config.json, weights, tokenizer).
        #[arg(long, env = "COLDFUSE_MODEL")]
        model: PathBuf,
        /// Sentences to embed.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Classify sentences with a fresh (untrained, seeded) head: a smoke test of the full model path.
    Classify {
        /// Hugging Face model directory.
        #[arg(long, env = "COLDFUSE_MODEL")]
        model: PathBuf,
        /// Number of labels of the fresh head.
        #[arg(long, default_value_t = 2)]
        labels: usize,
        /// Sentences to classify.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Benchmarks (release build): speed against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
}

/// What `train` and `run` share: the data, the hyper-parameters, the diff, and who contributes.
#[derive(Debug, clap::Args)]
struct JobArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    hyper: HyperArgs,
    #[command(flatten)]
    diff: DiffArgs,
    /// Contributor id in the manifest (default: from login or the token).
    #[arg(long)]
    contributor: Option<String>,
}

#[derive(Debug, clap::Args)]
struct TrainCmd {
    #[command(flatten)]
    job: JobArgs,
    /// Fine-tune this local HF model dir instead of pulling the coordinator's base (works offline).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Base iteration to pull (default: the latest).
    #[arg(long, conflicts_with = "base")]
    iteration: Option<u64>,
    /// Where to write diff.safetensors, manifest.json and report.json (must not exist).
    #[arg(long, default_value = "coldfuse-diff")]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RunCmd {
    #[command(flatten)]
    job: JobArgs,
    /// Rounds to contribute to (default: until stopped).
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds between polls while waiting for a new base.
    #[arg(long, default_value_t = 10.0)]
    poll_secs: f64,
    /// Where each round's contribution is kept.
    #[arg(long, default_value = "coldfuse-work")]
    work: PathBuf,
    /// Upload chunk size in MiB.
    #[arg(long, default_value_t = 8)]
    chunk_mib: u64,
}

fn main() -> anyhow::Result<()> {
    tuning::apply();
    coldfuse_shared::logging::init_stderr();
    let cli = Cli::parse();
    match cli.command {
        Command::Embed { model, texts } => inspect::embed(&model, &texts),
        Command::Classify {
            model,
            labels,
            texts,
        } => inspect::classify(&model, labels, &texts),
        Command::Bench { which } => bench::run(which),
        Command::Demo(args) => demo::run(args),
        Command::Eval(args) => eval::run(args),
        other => {
            let settings = Settings::resolve(&cli.connect)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(networked(other, settings)).map_err(with_hint)
        }
    }
}

/// The commands that talk to a coordinator (or may).
async fn networked(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Login { contributor } => login(&settings, contributor).await,
        Command::Status => status::show(&connect(&settings)?, &settings).await,
        Command::Lineage => status::lineage(&connect(&settings)?).await,
        Command::Pull { iteration, out } => {
            let pulled = pull::pull(&connect(&settings)?, &settings.cache_dir, iteration).await?;
            println!(
                "base {} ({}) verified in {}",
                pulled.manifest.iteration,
                pulled.manifest.base_sha256,
                pulled.dir.display()
            );
            if let Some(out) = out {
                pull::export(&pulled, &out)?;
                println!("written as a Hugging Face model dir to {}", out.display());
            }
            Ok(())
        }
        Command::Train(cmd) => train(cmd, &settings).await,
        Command::Submit { dir, chunk_mib } => {
            let client = connect(&settings)?;
            let outcome = submit::submit(&client, &dir, chunk_mib.max(1) << 20).await?;
            if let submit::Submitted::Accepted(status) = &outcome {
                let key = receipt::trusted_key(&client, &settings).await?;
                receipt::keep_accepted(&dir, status, &key)?;
            }
            submit::print_outcome(&outcome)
        }
        Command::Run(cmd) => run(cmd, &settings).await,
        Command::Receipt { which } => receipt::run(which, &settings).await,
        Command::Gate { which } => {
            gate::run(which, &connect(&settings)?, settings.cache_dir.clone()).await
        }
        Command::Verify(args) => {
            let client = match args.store {
                Some(_) => None,
                None => Some(connect(&settings)?),
            };
            verify::run(args, client).await
        }
        Command::Embed { .. }
        | Command::Classify { .. }
        | Command::Bench { .. }
        | Command::Demo(_)
        | Command::Eval(_) => {
            unreachable!("handled without a runtime")
        }
    }
}

/// Adds the next step to a coordinator error that does not carry one yet.
fn with_hint(e: anyhow::Error) -> anyhow::Error {
    let hint = e
        .chain()
        .find_map(|c| c.downcast_ref::<client::ClientError>())
        .and_then(client::ClientError::hint);
    match hint {
        Some(h) if !e.chain().any(|c| c.to_string() == h) => e.context(h),
        _ => e,
    }
}

fn connect(settings: &Settings) -> anyhow::Result<Client> {
    settings.client()
}

async fn login(settings: &Settings, contributor: Option<String>) -> anyhow::Result<()> {
    let client = connect(settings)?;
    let me = client
        .whoami()
        .await
        .context("checking the token with the coordinator")?;
    let Some(role) = me.role else {
        anyhow::bail!(
            "no token given: pass --token TOKEN (ask the coordinator's operator for one)"
        );
    };
    let round = client.round().await?;
    let key = client.signing_key().await?;
    if let Some(old) = receipt::pinned(settings)? {
        if old != key && settings.coordinator == SettingsFile::load(&settings.path)?.coordinator {
            anyhow::bail!(
                "the coordinator's receipt key changed from {} to {}: receipts it signs now would \
                 not verify against the pinned key. If the operator confirms the new key, \
                 remove `receipt_key` from {} and log in again",
                old.key_id,
                key.key_id,
                settings.path.display()
            );
        }
    }
    let file = SettingsFile {
        coordinator: settings.coordinator.clone(),
        token: settings.token.clone(),
        contributor: contributor.or(me.contributor),
        cache_dir: None,
        receipt_key: Some(key.public_key.clone()),
        tls: settings.tls.clone(),
    };
    file.save(&settings.path)?;
    println!(
        "logged in to {} as {role:?}{}; round {} is open (base {}); receipt key {} pinned. \
         Settings saved to {}",
        client.url(),
        file.contributor
            .as_deref()
            .map_or(String::new(), |c| format!(" `{c}`")),
        round.iteration,
        round.base_iteration,
        key.key_id,
        settings.path.display()
    );
    Ok(())
}

/// The contributor id: the flag, the login's, or the token's.
pub(crate) async fn contributor_id(
    flag: Option<String>,
    settings: &Settings,
    client: Option<&Client>,
) -> anyhow::Result<String> {
    if let Some(c) = flag.or_else(|| settings.contributor.clone()) {
        return Ok(c);
    }
    if let Some(client) = client {
        if let Some(c) = client.whoami().await?.contributor {
            return Ok(c);
        }
    }
    anyhow::bail!(
        "no contributor id: pass --contributor ID or `coldfuse login` with a contributor token"
    )
}

async fn train(cmd: TrainCmd, settings: &Settings) -> anyhow::Result<()> {
    let job = cmd.job;
    let cfg = job.hyper.config()?;
    let data = job.data.load(cfg.seed)?;
    let (base, client) = match &cmd.base {
        Some(dir) => (BaseSource::local(dir)?, None),
        None => {
            let client = connect(settings)
                .context("no --base given, so the base comes from the coordinator")?;
            let pulled = pull::pull(&client, &settings.cache_dir, cmd.iteration).await?;
            let base = BaseSource {
                dir: pulled.dir,
                base_ref: coldfuse_shared::diff::BaseRef {
                    id: format!("iteration-{}", pulled.manifest.iteration),
                    sha256: pulled.manifest.base_sha256,
                },
            };
            (base, Some(client))
        }
    };
    let contributor = contributor_id(job.contributor, settings, client.as_ref()).await?;
    let (device, diff, out) = (job.hyper.device, job.diff, cmd.out);
    let out_c = out.clone();
    let report = tokio::task::spawn_blocking(move || {
        train_cmd::train_contribution(&base, &data, &cfg, device, &diff, &contributor, &out_c)
    })
    .await??;
    train_cmd::print_report(&report, &out);
    println!("next: coldfuse submit {}", out.display());
    Ok(())
}

async fn run(cmd: RunCmd, settings: &Settings) -> anyhow::Result<()> {
    let client = connect(settings)?;
    let job = cmd.job;
    let cfg = job.hyper.config()?;
    let data = job.data.load(cfg.seed)?;
    let plan = run_loop::LoopPlan {
        contributor: contributor_id(job.contributor, settings, Some(&client)).await?,
        rounds: cmd.rounds,
        poll: Duration::from_secs_f64(cmd.poll_secs.max(0.05)),
        work: cmd.work,
        cache: settings.cache_dir.clone(),
        cfg,
        device: job.hyper.device,
        diff: job.diff,
        chunk: cmd.chunk_mib.max(1) << 20,
        receipt_key: receipt::trusted_key(&client, settings).await?,
    };
    run_loop::check(&plan)?;
    let done = run_loop::run(&client, &data, &plan).await?;
    println!("contributed to rounds {done:?}");
    Ok(())
}
