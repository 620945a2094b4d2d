//! Fusion: turning N validated diffs of one base into the next base.
//!
//! One [`Strategy`] trait, one small file per strategy (`mean` is the paper's rule; `weighted`,
//! `trimmed-mean`, `median`, `task-arithmetic`, `ties`, `dare`), optional per-contribution norm
//! clipping, and a streaming engine ([`fuse_weights`], [`fuse_dir`]) whose memory does not grow with
//! the number of contributions. Contributions are combined in ascending diff-hash order, so the
//! result is bit-identical whatever order they arrived in and however many threads run.

mod clip;
mod columns;
mod config;
mod dare;
mod dir;
mod engine;
mod error;
mod mean;
mod median;
mod replay;
mod running_sum;
mod server_opt;
mod strategy;
mod task_arithmetic;
mod ties;
mod trimmed_mean;
mod weighted;

pub use clip::{clip_bound, clip_factors};
pub use columns::{ColumnRanks, Ranked};
pub use config::{FusionConfig, StrategyConfig};
pub use dare::Dare;
pub use dir::fuse_dir;
pub use engine::{fuse_weights, ContributionReport, FuseOptions, FusionReport};
pub use error::FusionError;
pub use mean::Mean;
pub use median::Median;
pub use replay::{replay, replay_sum, RecordedDiff, ReplayInputs, Replayed};
pub use running_sum::{foldable, Folded, RunningSum};
pub use server_opt::{apply_server_optimizer, ServerOptimizer};
pub use strategy::{Chunk, CombineScratch, Strategy};
pub use task_arithmetic::TaskArithmetic;
pub use ties::Ties;
pub use trimmed_mean::TrimmedMean;
pub use weighted::Weighted;
