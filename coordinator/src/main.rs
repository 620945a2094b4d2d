//! `coldfuse-coordinator`: the ColD Fusion coordinator service (skeleton; the service lands with its issue).

use clap::Parser;

/// The coldfuse coordinator: tracks iterations, takes contributors' diffs, fuses and publishes bases.
#[derive(Debug, Parser)]
#[command(name = "coldfuse-coordinator", version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("the coordinator service is not implemented yet; see ARCHITECTURE.md")
}
