//! coldfuse-lab: what researchers, developers and operators run around a deployment, built on the
//! site library: the end-to-end demo with an embedded coordinator (`demo`), held-out evaluation of
//! bases with tables and plots (`eval`), ColD Fusion experiments with a budget over a task split
//! (`experiment`), the promotion gate's evaluator (`gate`), and benchmarks
//! against baselines measured in the same run (`bench`). The `coldfuse` binary includes it by default
//! (feature `lab`).

pub mod bench;
pub mod demo;
pub mod embedded;
pub mod eval;
pub mod experiment;
pub mod gate;

/// The lab's commands on the `coldfuse` command line (none of them needs a coordinator login).
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// ColD Fusion end to end on this machine: embedded coordinator, contributors on real tasks,
    /// several fused iterations, then every base scored on a held-out task.
    Demo(demo::DemoArgs),
    /// Score bases as starting points for a held-out task (linear probe + few-shot, several seeds).
    Eval(eval::EvalArgs),
    /// ColD Fusion with a configurable budget over a split of tasks into contributor and held-out
    /// tasks, every base scored on the held-out ones; resumable (the long form of the demo).
    Experiment(experiment::ExperimentArgs),
    /// Benchmarks (release build): speed against a baseline measured in the same run.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
}

/// Runs a lab command.
pub fn run(command: LabCommand) -> anyhow::Result<()> {
    match command {
        LabCommand::Demo(args) => demo::run(args),
        LabCommand::Eval(args) => eval::run(args),
        LabCommand::Experiment(args) => experiment::run(args),
        LabCommand::Bench { which } => bench::run(which),
    }
}
