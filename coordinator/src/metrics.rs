//! Prometheus metrics (the `prometheus` crate's registry), rendered in the text exposition format at
//! `/metrics`: the round and fusion counters, and the edge's per-route requests, latencies, bytes,
//! connections and uploads in flight.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use prometheus::{
    Counter, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Latency buckets in seconds: 250 µs to 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
];

/// The coordinator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    iteration: IntGauge,
    round_accepted: IntGauge,
    accepted: IntCounter,
    rejected: IntCounterVec,
    upload_bytes: IntCounter,
    fusions: IntCounter,
    fusion_failures: IntCounter,
    fusion_seconds: Counter,
    requests: IntCounterVec,
    latency: HistogramVec,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    uploads_in_flight: IntGauge,
    connections_open: IntGauge,
    connections_refused: IntCounterVec,
    tls_failures: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Decrements a gauge when dropped.
#[derive(Debug)]
pub struct GaugeGuard(IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn registered<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let r = Registry::new();
        let int = |name: &str, help: &str| {
            registered(&r, IntCounter::new(name, help).expect("valid metric"))
        };
        let gauge = |name: &str, help: &str| {
            registered(&r, IntGauge::new(name, help).expect("valid metric"))
        };
        let vec = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        Self {
            iteration: gauge(
                "coldfuse_iteration",
                "Iteration the current round will produce.",
            ),
            round_accepted: gauge(
                "coldfuse_round_accepted",
                "Accepted contributions in the current round.",
            ),
            accepted: int(
                "coldfuse_contributions_accepted_total",
                "Contributions accepted.",
            ),
            rejected: vec(
                "coldfuse_contributions_rejected_total",
                "Contributions rejected, by reason.",
                &["reason"],
            ),
            upload_bytes: int("coldfuse_upload_bytes_total", "Bytes of accepted diffs."),
            fusions: int("coldfuse_fusions_total", "Fusions committed."),
            fusion_failures: int(
                "coldfuse_fusion_failures_total",
                "Fusions that failed (nothing published).",
            ),
            fusion_seconds: registered(
                &r,
                Counter::new("coldfuse_fusion_seconds_total", "Time spent fusing.")
                    .expect("valid metric"),
            ),
            requests: vec(
                "coldfuse_http_requests_total",
                "HTTP requests answered, by method, route template and status.",
                &["method", "route", "status"],
            ),
            latency: registered(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "coldfuse_http_request_duration_seconds",
                        "Time to the response's head, by method and route template.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["method", "route"],
                )
                .expect("valid metric"),
            ),
            bytes_in: int(
                "coldfuse_http_request_bytes_total",
                "Request body bytes received.",
            ),
            bytes_out: int(
                "coldfuse_http_response_bytes_total",
                "Response body bytes sent.",
            ),
            uploads_in_flight: gauge(
                "coldfuse_uploads_in_flight",
                "Diff uploads receiving bytes now.",
            ),
            connections_open: gauge("coldfuse_connections_open", "Open client connections."),
            connections_refused: vec(
                "coldfuse_connections_refused_total",
                "Connections closed by the limits: full (every slot serving), per_ip, or evicted \
                 (an older connection without a request made room).",
                &["reason"],
            ),
            tls_failures: int(
                "coldfuse_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out.",
            ),
            registry: r,
        }
    }

    /// Counts an accepted contribution of `bytes`.
    pub fn accepted(&self, bytes: u64) {
        self.accepted.inc();
        self.upload_bytes.inc_by(bytes);
    }

    /// Counts a rejection by reason.
    pub fn rejected(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }

    /// Counts a finished fusion and its duration.
    pub fn fused(&self, seconds: f64) {
        self.fusions.inc();
        self.fusion_seconds.inc_by(seconds);
    }

    /// Counts a failed fusion.
    pub fn fusion_failed(&self) {
        self.fusion_failures.inc();
    }

    /// Counts one answered request.
    pub fn request(&self, method: &Method, route: &str, status: StatusCode, elapsed: Duration) {
        // Only standard methods become label values (a client picks the method).
        let method = match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            Method::OPTIONS => "OPTIONS",
            _ => "OTHER",
        };
        self.requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    /// The request-body byte counter.
    pub fn bytes_in(&self) -> IntCounter {
        self.bytes_in.clone()
    }

    /// The response-body byte counter.
    pub fn bytes_out(&self) -> IntCounter {
        self.bytes_out.clone()
    }

    /// Counts an open connection until the guard drops.
    pub fn connection_opened(&self) -> GaugeGuard {
        self.connections_open.inc();
        GaugeGuard(self.connections_open.clone())
    }

    /// Counts a connection the limits closed.
    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused.with_label_values(&[reason]).inc();
    }

    /// Counts a failed TLS handshake.
    pub fn tls_handshake_failed(&self) {
        self.tls_failures.inc();
    }

    /// Uploads receiving bytes now.
    pub fn uploads_in_flight(&self) -> i64 {
        self.uploads_in_flight.get()
    }

    /// Counts an upload receiving bytes until the guard drops.
    pub fn upload_started(&self) -> GaugeGuard {
        self.uploads_in_flight.inc();
        GaugeGuard(self.uploads_in_flight.clone())
    }

    /// The text exposition, with the current iteration and round size as gauges.
    pub fn render(&self, iteration: u64, accepted_in_round: usize) -> String {
        self.iteration.set(iteration as i64);
        self.round_accepted.set(accepted_in_round as i64);
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}
