//! `coldfuse bench`: speed measured against a baseline in the same run, printed as ratios.

mod fuse;
mod python;
mod sys;
mod train;

use clap::Subcommand;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Fuse N contributions of a roberta-base-sized model; compare with raw read speed and NumPy.
    Fuse(fuse::FuseArgs),
    /// One fine-tuning step (forward, backward, AdamW) in coldfuse and in PyTorch, same shapes and threads.
    Train(train::TrainArgs),
}

/// Runs a benchmark.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Fuse(args) => fuse::run(args),
        BenchCommand::Train(args) => train::run(args),
    }
}
