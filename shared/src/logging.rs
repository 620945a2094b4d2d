//! Log output of the binaries: `tracing` events on stderr, filtered by `RUST_LOG` (default
//! `info,rustls=error`: rustls warns about what a client sent, e.g. an IP address as SNI, which a
//! client could repeat to flood the log), as text (colours only on a terminal) or as one JSON object
//! per line for log collectors.

use std::io::IsTerminal;

/// The filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,rustls=error";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the fields of the enclosing spans.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("log format {other:?}: use text or json")),
        }
    }
}

/// Installs the stderr subscriber in `format` (once per process; later calls are ignored).
pub fn init(format: LogFormat) {
    install(format, std::io::stderr);
}

/// Keeps a server's log writer running; dropping it writes out what is queued.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

/// As [`init`], for servers: lines are formatted on the calling thread but written by a background
/// thread in batches, so a request never waits for stderr (a slow disk or pipe); when more than
/// 128k lines are queued, new ones are dropped rather than stall the server.
pub fn init_server(format: LogFormat) -> LogGuard {
    let out = std::io::BufWriter::with_capacity(64 << 10, std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(128 << 10)
        .thread_name("coldfuse-log")
        .finish(out);
    install(format, writer);
    LogGuard(guard)
}

fn install<W>(format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
