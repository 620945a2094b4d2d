//! Log output of the binaries: `tracing` lines on stderr, filtered by `RUST_LOG` (default `info`).

/// Installs the stderr subscriber (once per process; later calls are ignored).
pub fn init_stderr() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
