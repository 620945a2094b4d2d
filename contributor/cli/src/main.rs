//! `coldfuse`: the command line of a site. Pull the shared base, fine-tune it on local data, submit the
//! body diff, or run that loop; receipts, lineage and verification; and, with the default `lab`
//! feature, the demo, held-out evaluation, the gate's evaluator and benchmarks. The work is done by
//! `coldfuse-contributor` (and `coldfuse-lab`); this file only parses and dispatches.

mod tuning;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use coldfuse_contributor::{
    evaluate::{self, EvaluateArgs},
    gate, inspect, login, pull,
    receipt::{self, ReceiptCommand},
    run_loop::{run_command, RunArgs},
    status, submit,
    train::{train, TrainArgs},
    verify::{self, VerifyArgs},
    with_hint, ConnectArgs, Settings,
};
use coldfuse_shared::logging::{self, LogFormat};

/// coldfuse: collaborative fine-tuning of one shared encoder (ColD Fusion), contributor side.
///
/// A site pulls the current fused base, fine-tunes it on its own labelled data, and uploads only the
/// body's weight diff; the coordinator fuses the diffs of all sites into the next base.
#[derive(Debug, Parser)]
#[command(name = "coldfuse", version, about, long_about)]
struct Cli {
    /// Log lines on stderr: text (colours only on a terminal) or json (one object per line).
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

// Parsed once per process: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Site(SiteCommand),
    #[command(flatten)]
    Offline(OfflineCommand),
    #[cfg(feature = "lab")]
    #[command(flatten)]
    Lab(coldfuse_lab::LabCommand),
}

/// The commands that talk to a coordinator (or may): each takes the connection options.
#[derive(Debug, Subcommand)]
enum SiteCommand {
    /// Check a coordinator URL and token, and remember them for later commands.
    Login {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Contributor id to write manifests as (default: the token's).
        #[arg(long)]
        contributor: Option<String>,
    },
    /// Show the current round, who you are, and your contribution to it.
    Status {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List the published bases: parent, contributors, fusion strategy, update norm, hash.
    Lineage {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Download a fused base (the latest by default) into the cache, verified.
    Pull {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Base iteration (default: the latest).
        #[arg(long)]
        iteration: Option<u64>,
        /// Also write it as a plain Hugging Face model dir here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fine-tune a base on local data and write the contribution (diff + manifest) to --out.
    Train {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(flatten)]
        args: TrainArgs,
    },
    /// Upload a contribution written by `train`, resuming an interrupted upload; prints the verdict.
    Submit {
        #[command(flatten)]
        connect: ConnectArgs,
        /// The contribution directory (`train --out`).
        dir: PathBuf,
        /// Upload chunk size in MiB.
        #[arg(long, default_value_t = 8)]
        chunk_mib: u64,
    },
    /// The contributor loop: wait for a new base, pull, train, submit; for N rounds or forever.
    Run {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Site evaluation: score each gated candidate against latest on this site's own data and send
    /// the gate only the aggregates (scores, gain and its interval, counts).
    Evaluate {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(flatten)]
        args: EvaluateArgs,
    },
    /// Replay the fusion of a committed iteration from the inputs its lineage records and check that
    /// the published base is the same bit for bit (or name the first tensor that differs).
    Verify {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(flatten)]
        args: VerifyArgs,
    },
    /// The promotion gate (operator): see where it stands, promote or discard by hand (and, in the
    /// build with the lab, evaluate candidates on held-out tasks).
    Gate {
        #[command(subcommand)]
        which: GateCommand,
    },
    /// Signed receipts: check one offline against the coordinator's key, or fetch a fused one.
    Receipt {
        #[command(subcommand)]
        which: ReceiptCommand,
    },
}

/// `coldfuse gate ...` (needs an admin token, except `status`).
// Parsed once per process, like `Command`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum GateCommand {
    /// Show the gate's settings and the candidate awaiting it, with its evals.
    Status {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Score each candidate against latest on held-out tasks and report to the coordinator.
    #[cfg(feature = "lab")]
    Evaluate {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(flatten)]
        args: coldfuse_lab::gate::EvaluateArgs,
    },
    /// Make a candidate `latest` by hand.
    Promote {
        #[command(flatten)]
        connect: ConnectArgs,
        /// The candidate iteration.
        iteration: u64,
        /// Why (recorded in the gate record and the card).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Never make a candidate `latest`.
    Discard {
        #[command(flatten)]
        connect: ConnectArgs,
        /// The candidate iteration.
        iteration: u64,
        /// Why (recorded in the gate record).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Commands that work on local files only.
#[derive(Debug, Subcommand)]
enum OfflineCommand {
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
}

fn main() -> anyhow::Result<()> {
    tuning::apply();
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Command::Site(command) => {
            let settings = Settings::resolve(command.connect())?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(site(command, settings)).map_err(with_hint)
        }
        Command::Offline(OfflineCommand::Embed { model, texts }) => inspect::embed(&model, &texts),
        Command::Offline(OfflineCommand::Classify {
            model,
            labels,
            texts,
        }) => inspect::classify(&model, labels, &texts),
        #[cfg(feature = "lab")]
        Command::Lab(command) => coldfuse_lab::run(command),
    }
}

impl SiteCommand {
    /// The connection options every site command carries.
    fn connect(&self) -> &ConnectArgs {
        match self {
            Self::Login { connect, .. }
            | Self::Status { connect }
            | Self::Lineage { connect }
            | Self::Pull { connect, .. }
            | Self::Train { connect, .. }
            | Self::Submit { connect, .. }
            | Self::Run { connect, .. }
            | Self::Evaluate { connect, .. }
            | Self::Verify { connect, .. } => connect,
            Self::Gate { which } => which.connect(),
            Self::Receipt { which } => which.connect(),
        }
    }
}

impl GateCommand {
    /// Its connection options.
    fn connect(&self) -> &ConnectArgs {
        match self {
            Self::Status { connect }
            | Self::Promote { connect, .. }
            | Self::Discard { connect, .. } => connect,
            #[cfg(feature = "lab")]
            Self::Evaluate { connect, .. } => connect,
        }
    }
}

async fn site(command: SiteCommand, settings: Settings) -> anyhow::Result<()> {
    match command {
        SiteCommand::Login { contributor, .. } => login::login(&settings, contributor).await,
        SiteCommand::Status { .. } => status::show(&settings.client()?, &settings).await,
        SiteCommand::Lineage { .. } => status::lineage(&settings.client()?).await,
        SiteCommand::Pull { iteration, out, .. } => {
            let pulled = pull::pull(&settings.client()?, &settings.cache_dir, iteration).await?;
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
        SiteCommand::Train { args, .. } => train(args, &settings).await,
        SiteCommand::Submit { dir, chunk_mib, .. } => {
            let client = settings.client()?;
            let outcome = submit::submit(&client, &dir, chunk_mib.max(1) << 20).await?;
            if let submit::Submitted::Accepted(status) = &outcome {
                let key = receipt::trusted_key(&client, &settings).await?;
                receipt::keep_accepted(&dir, status, &key)?;
            }
            submit::print_outcome(&outcome)
        }
        SiteCommand::Run { args, .. } => run_command(args, &settings).await,
        SiteCommand::Evaluate { args, .. } => evaluate::evaluate(&settings, args).await,
        SiteCommand::Receipt { which, .. } => receipt::run(which, &settings).await,
        SiteCommand::Gate { which, .. } => {
            let client = settings.client()?;
            match which {
                GateCommand::Status { .. } => gate::status(&client).await,
                GateCommand::Promote {
                    iteration, reason, ..
                } => gate::decide(&client, iteration, true, reason).await,
                GateCommand::Discard {
                    iteration, reason, ..
                } => gate::decide(&client, iteration, false, reason).await,
                #[cfg(feature = "lab")]
                GateCommand::Evaluate { args, .. } => {
                    coldfuse_lab::gate::evaluate(&client, &settings.cache_dir, args).await
                }
            }
        }
        SiteCommand::Verify { args, .. } => {
            let client = match args.store {
                Some(_) => None,
                None => Some(settings.client()?),
            };
            verify::run(args, client).await
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks over every command (unique names, valid defaults, ...), which
    /// it otherwise runs only when a command is parsed in a debug build.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
