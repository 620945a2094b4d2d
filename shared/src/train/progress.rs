//! Training progress: an indicatif bar with steps/s and ETA on a terminal, plain `tracing` lines
//! otherwise. Every step's loss also goes to `tracing` at debug level (the loss curve).

use std::{io::IsTerminal, time::Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    /// Always a bar (on stderr).
    Bar,
    /// Always log lines.
    Log,
    /// Nothing beyond debug-level step logs.
    Off,
}

/// Progress of one run.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    log: bool,
    log_every: usize,
    total: usize,
    start: Instant,
    first_step: usize,
}

impl Progress {
    /// Starts showing progress of steps `first_step..total`.
    pub fn new(mode: ProgressMode, total: usize, first_step: usize, log_every: usize) -> Self {
        let bar_wanted = match mode {
            ProgressMode::Auto => std::io::stderr().is_terminal(),
            ProgressMode::Bar => true,
            ProgressMode::Log | ProgressMode::Off => false,
        };
        let bar = bar_wanted.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} steps {per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_position(first_step as u64);
            bar.reset_eta();
            bar
        });
        Self {
            bar,
            log: matches!(mode, ProgressMode::Log) || (mode == ProgressMode::Auto && !bar_wanted),
            log_every,
            total,
            start: Instant::now(),
            first_step,
        }
    }

    /// Records a finished optimizer step (1-based `done` steps so far).
    pub fn step(&self, done: usize, epoch: usize, loss: f64, lr: f64, grad_norm: f64) {
        tracing::debug!(step = done, epoch, loss, lr, grad_norm, "train step");
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
            bar.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
            return;
        }
        if self.log && (done.is_multiple_of(self.log_every) || done == self.total) {
            let secs = self.start.elapsed().as_secs_f64();
            let steps_per_s = (done - self.first_step) as f64 / secs.max(1e-9);
            let eta_s = (self.total - done) as f64 / steps_per_s.max(1e-9);
            tracing::info!(
                step = done,
                total = self.total,
                epoch,
                loss = format!("{loss:.4}"),
                lr = format!("{lr:.3e}"),
                grad_norm = format!("{grad_norm:.3}"),
                steps_per_s = format!("{steps_per_s:.2}"),
                eta_s = format!("{eta_s:.0}"),
                "train"
            );
        }
    }

    /// Runs `f` (a log call) without tearing the bar.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
