//! Prometheus counters, rendered in the text exposition format at `/metrics`.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

/// The coordinator's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    accepted: AtomicU64,
    upload_bytes: AtomicU64,
    fusions: AtomicU64,
    fusion_failures: AtomicU64,
    fusion_millis: AtomicU64,
    rejected: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    /// Counts an accepted contribution of `bytes`.
    pub fn accepted(&self, bytes: u64) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.upload_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts a rejection by reason.
    pub fn rejected(&self, reason: &str) {
        let mut map = self.rejected.lock().expect("metrics lock");
        *map.entry(reason.to_string()).or_default() += 1;
    }

    /// Counts a finished fusion and its duration.
    pub fn fused(&self, seconds: f64) {
        self.fusions.fetch_add(1, Ordering::Relaxed);
        self.fusion_millis
            .fetch_add((seconds * 1000.0) as u64, Ordering::Relaxed);
    }

    /// Counts a failed fusion.
    pub fn fusion_failed(&self) {
        self.fusion_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition, with the current iteration as a gauge.
    pub fn render(&self, iteration: u64, accepted_in_round: usize) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<String>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric(
            "coldfuse_iteration",
            "gauge",
            "Iteration the current round will produce.",
            vec![format!("coldfuse_iteration {iteration}")],
        );
        metric(
            "coldfuse_round_accepted",
            "gauge",
            "Accepted contributions in the current round.",
            vec![format!("coldfuse_round_accepted {accepted_in_round}")],
        );
        metric(
            "coldfuse_contributions_accepted_total",
            "counter",
            "Contributions accepted.",
            vec![format!(
                "coldfuse_contributions_accepted_total {}",
                get(&self.accepted)
            )],
        );
        let rejected = self.rejected.lock().expect("metrics lock");
        metric(
            "coldfuse_contributions_rejected_total",
            "counter",
            "Contributions rejected, by reason.",
            rejected
                .iter()
                .map(|(r, n)| {
                    format!("coldfuse_contributions_rejected_total{{reason=\"{r}\"}} {n}")
                })
                .collect(),
        );
        metric(
            "coldfuse_upload_bytes_total",
            "counter",
            "Bytes of accepted diffs.",
            vec![format!(
                "coldfuse_upload_bytes_total {}",
                get(&self.upload_bytes)
            )],
        );
        metric(
            "coldfuse_fusions_total",
            "counter",
            "Fusions committed.",
            vec![format!("coldfuse_fusions_total {}", get(&self.fusions))],
        );
        metric(
            "coldfuse_fusion_failures_total",
            "counter",
            "Fusions that failed (nothing published).",
            vec![format!(
                "coldfuse_fusion_failures_total {}",
                get(&self.fusion_failures)
            )],
        );
        metric(
            "coldfuse_fusion_seconds_total",
            "counter",
            "Time spent fusing.",
            vec![format!(
                "coldfuse_fusion_seconds_total {:.3}",
                get(&self.fusion_millis) as f64 / 1000.0
            )],
        );
        out
    }
}
