//! `coldfuse-coordinator serve`: its flags, start-up (state, fusion task, upload sweeper, TLS) and
//! the edge in front of the router.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;

use crate::{
    edge::{
        self,
        observe::{HttpOptions, DEFAULT_REQUEST_TIMEOUT_SECS},
        EdgeConfig, SlotLimits, Tls, TlsFiles, DEFAULT_HEADER_READ_SECS, DEFAULT_MAX_CONNECTIONS,
        DEFAULT_SEND_IDLE_SECS, DEFAULT_SHUTDOWN_GRACE_SECS,
    },
    fusion_task, routes, signing, upload, Coordinator, Store,
};

/// Flags of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Store URL.
    #[arg(long, env = "COLDFUSE_STORE")]
    pub store: String,
    /// Address to listen on.
    #[arg(long, env = "COLDFUSE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Local work directory (base cache, uploads in progress).
    #[arg(long, env = "COLDFUSE_WORK")]
    pub work: Option<PathBuf>,
    /// The receipt key file (default: the one `init` wrote to the coordinator's config dir).
    #[arg(long, env = "COLDFUSE_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// Seconds after which an upload that received nothing is discarded (its stored parts aborted,
    /// its local tail deleted; the upload then starts again from byte 0).
    #[arg(long, env = "COLDFUSE_UPLOAD_IDLE_SECS", default_value_t = 86_400)]
    pub upload_idle_secs: u64,
    /// Seconds an upload body may send nothing before the request ends with 408 (the bytes so
    /// far stay; the upload resumes) and releases the contributor's upload slot.
    #[arg(long, env = "COLDFUSE_UPLOAD_BODY_IDLE_SECS", default_value_t = 60)]
    pub upload_body_idle_secs: u64,
    /// TLS certificate chain (PEM, leaf first): serve HTTPS. Reloaded on SIGHUP or file change.
    #[arg(
        long,
        env = "COLDFUSE_TLS_CERT",
        requires = "tls_key",
        help_heading = "TLS"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(
        long,
        env = "COLDFUSE_TLS_KEY",
        requires = "tls_cert",
        help_heading = "TLS"
    )]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that sites' client certificates must chain to: mutual TLS, on top
    /// of the bearer tokens.
    #[arg(
        long,
        env = "COLDFUSE_CLIENT_CA",
        requires = "tls_cert",
        help_heading = "TLS"
    )]
    pub client_ca: Option<PathBuf>,
    /// Seconds between checks of the TLS files for changes.
    #[arg(long, default_value_t = 10, help_heading = "TLS")]
    pub tls_poll_secs: u64,
    /// Most open connections (lowered to fit the open-file limit). When full, a new connection
    /// takes the place of the oldest one that has not sent a request yet.
    #[arg(long, env = "COLDFUSE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, help_heading = "Limits")]
    pub max_connections: usize,
    /// Most open connections from one client address (0: no per-address limit; behind a proxy
    /// every client shares the proxy's address).
    #[arg(
        long,
        env = "COLDFUSE_MAX_CONNECTIONS_PER_IP",
        default_value_t = 0,
        help_heading = "Limits"
    )]
    pub max_connections_per_ip: usize,
    /// Seconds a connection has to send a complete request header (also the TLS handshake's
    /// limit, and how long an idle keep-alive connection stays open).
    #[arg(long, env = "COLDFUSE_HEADER_TIMEOUT_SECS", default_value_t = DEFAULT_HEADER_READ_SECS, help_heading = "Limits")]
    pub header_timeout_secs: u64,
    /// Seconds a write to a client may make no progress (it stopped reading) before the
    /// connection ends and frees its slot.
    #[arg(long, env = "COLDFUSE_SEND_IDLE_SECS", default_value_t = DEFAULT_SEND_IDLE_SECS, help_heading = "Limits")]
    pub send_idle_secs: u64,
    /// Seconds any request but a diff upload may take to answer (503 `timeout` after).
    #[arg(long, env = "COLDFUSE_REQUEST_TIMEOUT_SECS", default_value_t = DEFAULT_REQUEST_TIMEOUT_SECS, help_heading = "Limits")]
    pub request_timeout_secs: u64,
    /// Seconds in-flight requests get to finish after SIGTERM or Ctrl-C before they are cut.
    #[arg(long, env = "COLDFUSE_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS, help_heading = "Limits")]
    pub shutdown_grace_secs: u64,
    /// Behind a reverse proxy: take the client address from X-Forwarded-For and the request id
    /// from X-Request-Id. Only when every request comes through a proxy that sets both.
    #[arg(long, env = "COLDFUSE_TRUST_FORWARDED")]
    pub trust_forwarded: bool,
}

impl ServeArgs {
    fn edge(&self) -> anyhow::Result<EdgeConfig> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.client_ca.clone(),
                };
                Some(Tls::load(files).context("loading the TLS certificate")?)
            }
            _ => None,
        };
        Ok(EdgeConfig {
            limits: SlotLimits {
                limit: edge::fit_connection_limit(self.max_connections.max(1)),
                per_ip: (self.max_connections_per_ip > 0).then_some(self.max_connections_per_ip),
            },
            header_read_timeout: secs(self.header_timeout_secs),
            send_idle_timeout: secs(self.send_idle_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            tls,
        })
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s.max(1))
}

/// Runs the coordinator until SIGTERM or Ctrl-C (then in-flight requests get the grace period).
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let edge = args.edge()?;
    let store = Store::open(&args.store)?;
    let work = args.work.clone().unwrap_or_else(|| {
        let key = &coldfuse_shared::hash::sha256_bytes(store.url().as_bytes())[..12];
        std::env::temp_dir().join(format!("coldfuse-coordinator-{key}"))
    });
    let signing_key = args.signing_key.clone().or_else(|| {
        let default = signing::default_key_path(store.url());
        default.is_file().then_some(default)
    });
    let signer = signing_key
        .as_deref()
        .map(signing::read_key_file)
        .transpose()?;
    let coordinator = Coordinator::load(store, &work, signer).await?;
    coordinator.set_upload_body_idle(secs(args.upload_body_idle_secs));
    tokio::spawn(fusion_task::run(coordinator.clone()));
    coordinator.wake.notify_one();
    spawn_upload_sweeper(coordinator.clone(), secs(args.upload_idle_secs));
    if let Some(tls) = &edge.tls {
        tls.watch(secs(args.tls_poll_secs))?;
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    warn_if_exposed(addr, &edge, args.trust_forwarded);
    tracing::info!(
        %addr,
        tls = edge.tls.is_some(),
        mutual_tls = args.client_ca.is_some(),
        max_connections = edge.limits.limit,
        "serving"
    );
    eprintln!("listening on {addr}");
    let app = routes::router_with(
        coordinator.clone(),
        HttpOptions {
            request_timeout: secs(args.request_timeout_secs),
            trust_forwarded: args.trust_forwarded,
        },
    );
    edge::serve(listener, app, edge, coordinator.metrics.clone(), shutdown()).await?;
    Ok(())
}

fn spawn_upload_sweeper(c: Arc<Coordinator>, upload_idle: Duration) {
    tokio::spawn(async move {
        let every = (upload_idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
        loop {
            tokio::time::sleep(every).await;
            upload::expire(&c, upload_idle).await;
        }
    });
}

/// Plain HTTP on an address other machines can reach sends tokens and diffs in clear.
fn warn_if_exposed(addr: SocketAddr, edge: &EdgeConfig, behind_proxy: bool) {
    if edge.tls.is_none() && !addr.ip().is_loopback() && !behind_proxy {
        tracing::warn!(
            %addr,
            "PLAIN HTTP on a non-loopback address: bearer tokens and diffs cross the network in \
             clear. Pass --tls-cert/--tls-key, or listen on 127.0.0.1 behind a TLS reverse proxy \
             (--trust-forwarded)"
        );
    }
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
