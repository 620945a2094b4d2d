//! The network edge: accepting connections (TLS or plain HTTP/1.1) in front of the router, with a
//! connection limit, a header-read deadline and a shutdown deadline. Per-request concerns (request
//! ids, spans, access logs, metrics, handler deadlines) are in [`observe`].

pub mod observe;
pub mod pki;
pub mod slots;
pub mod stall;
pub mod tls;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{extract::ConnectInfo, Router};
use hyper::{body::Incoming, server::conn::http1, Request};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tower::ServiceExt;

use crate::metrics::Metrics;
pub use slots::SlotLimits;
use slots::{Refused, Slot, Slots};
use stall::SendDeadline;
pub use tls::{Tls, TlsFiles};

/// How the edge treats connections.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Connection limits.
    pub limits: SlotLimits,
    /// Time a connection has to send a complete request header (also the TLS handshake's limit,
    /// and how long an idle keep-alive connection stays open).
    pub header_read_timeout: Duration,
    /// Time a write to a client may make no progress before the connection ends (a client that
    /// stopped reading frees its slot).
    pub send_idle_timeout: Duration,
    /// After a shutdown signal: time in-flight requests get to finish before they are cut.
    pub shutdown_grace: Duration,
    /// Built-in TLS, when configured.
    pub tls: Option<Arc<Tls>>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            limits: SlotLimits {
                limit: DEFAULT_MAX_CONNECTIONS,
                per_ip: None,
            },
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_SECS),
            send_idle_timeout: Duration::from_secs(DEFAULT_SEND_IDLE_SECS),
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS),
            tls: None,
        }
    }
}

/// Default most open connections (lowered to fit the process's file limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default header-read deadline in seconds.
pub const DEFAULT_HEADER_READ_SECS: u64 = 15;
/// Default send deadline (a write without progress) in seconds.
pub const DEFAULT_SEND_IDLE_SECS: u64 = 60;
/// Default shutdown deadline in seconds.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;

/// File descriptors kept back from the connection limit for the store, upload tails and the base cache:
/// a quarter of the limit, between 16 and 256.
fn reserved_fds(limit: u64) -> u64 {
    (limit / 4).clamp(16, 256)
}

/// Raises the soft open-file limit to the hard one and answers how many connections fit under it
/// (at most `wanted`), so that the limit, not `accept`, is what turns connections away.
pub fn fit_connection_limit(wanted: usize) -> usize {
    let fds = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let fits = fds.saturating_sub(reserved_fds(fds)).max(16) as usize;
    if fits < wanted {
        tracing::warn!(
            wanted,
            fits,
            open_files = fds,
            "the connection limit is lowered to fit the open-file limit (ulimit -n)"
        );
    }
    wanted.min(fits)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish for up
/// to the configured deadline.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: EdgeConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Slots::new(config.limits);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match slots.admit(peer.ip()) {
            Ok((slot, evicted)) => {
                if evicted {
                    metrics.connection_refused("evicted");
                }
                slot
            }
            Err(why) => {
                metrics.connection_refused(match why {
                    Refused::Full => "full",
                    Refused::PerIp => "per_ip",
                });
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let connection = Connection {
            app: app.clone(),
            peer,
            slot: Arc::new(slot),
            metrics: metrics.clone(),
            header_read_timeout: config.header_read_timeout,
        };
        let io = stall::SendDeadline::new(tcp, config.send_idle_timeout);
        tokio::spawn(connection.run(io, config.tls.clone(), graceful.watcher()));
    }
    drop(listener);
    let open = slots.open();
    tracing::info!(
        open,
        deadline_secs = config.shutdown_grace.as_secs_f64(),
        "shutting down: finishing in-flight requests"
    );
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = slots.open(),
            "shutdown deadline passed: cutting the requests still in flight"
        );
    }
    Ok(())
}

/// Errors of `accept` that concern one connection are skipped; running out of file descriptors or
/// memory pauses accepting briefly instead of spinning.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One accepted connection.
struct Connection {
    app: Router,
    peer: SocketAddr,
    slot: Arc<Slot>,
    metrics: Arc<Metrics>,
    header_read_timeout: Duration,
}

impl Connection {
    async fn run(self, tcp: SendDeadline<TcpStream>, tls: Option<Arc<Tls>>, watcher: Watcher) {
        let _open = self.metrics.connection_opened();
        match tls {
            None => self.serve(tcp, watcher).await,
            Some(tls) => {
                let handshake =
                    tokio::time::timeout(self.header_read_timeout, tls.acceptor().accept(tcp));
                let stream = tokio::select! {
                    done = handshake => done,
                    () = self.slot.evicted() => return,
                };
                match stream {
                    Ok(Ok(stream)) => self.serve(stream, watcher).await,
                    Ok(Err(e)) => {
                        self.metrics.tls_handshake_failed();
                        tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        self.metrics.tls_handshake_failed();
                        tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                    }
                }
            }
        }
    }

    async fn serve<I>(self, io: I, watcher: Watcher)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            app,
            peer,
            slot,
            header_read_timeout,
            ..
        } = self;
        let serving = slot.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            serving.serving();
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(TokioIo::new(io), service);
        let connection = watcher.watch(connection);
        tokio::select! {
            result = connection => {
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
            }
            () = slot.evicted() => {
                tracing::debug!(peer = %peer, "connection evicted before its first request");
            }
        }
    }
}
