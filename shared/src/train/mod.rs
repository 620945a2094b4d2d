//! The fine-tuning engine each contributor runs on its private data: a fresh task head on the current
//! base, AdamW (fused, decoupled weight decay except on biases and LayerNorm weights), linear warmup and
//! decay, global-norm clipping, gradient accumulation, epochs or max steps, dev evaluation with early
//! stopping, linear-probe mode, checkpoint/resume, and progress on a terminal or in logs.
//!
//! The result keeps the body (same names as the base: what is diffed and shared) apart from the head
//! (local to the task). Runs are reproducible on the CPU for a fixed seed, resumed runs included.

mod config;
mod device;
mod error;
mod eval;
mod frozen;
pub mod metrics;
mod optim;
mod probe;
mod progress;
mod resume;
mod schedule;
mod trainer;

pub use config::{EarlyStopping, Metric, TrainConfig};
pub use device::{cuda_built, DeviceChoice};
pub use error::TrainError;
pub use eval::{evaluate, Evaluation, Predictions};
pub use frozen::FrozenFeatures;
pub use optim::{decays, AdamW, AdamWParams};
pub use probe::LinearProbe;
pub use progress::ProgressMode;
pub use schedule::LinearSchedule;
pub use trainer::{
    fine_tune, CheckpointOptions, EvalLog, RunOptions, StepLog, StopReason, TrainOutcome, Trainer,
};
