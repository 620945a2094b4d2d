//! Built-in TLS (rustls, no OpenSSL): the server certificate and key from PEM files, optionally a
//! client CA that every site must present a certificate from (mutual TLS), reloaded on SIGHUP or
//! when the files change. A reload affects new connections only; open ones keep their session. A
//! reload that fails (a half-written file, a key that does not match) keeps the previous
//! configuration and logs why.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tokio_rustls::TlsAcceptor;

/// Why a TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the certificate, key or client CA.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Where the PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates that site (client) certificates must chain to: mutual TLS when set.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    /// Modification time and length of every file: a change means a reload is due.
    fn stamp(&self) -> Stamp {
        self.paths()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    /// Builds the rustls configuration from the files (HTTP/1.1 by ALPN, TLS 1.2 and 1.3).
    pub fn load(&self) -> Result<ServerConfig, TlsError> {
        let pem = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| pem(&self.cert, e))?;
        if certs.is_empty() {
            return Err(TlsError::Pem {
                path: self.cert.clone(),
                message: "no CERTIFICATE block".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| pem(&self.key, e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| pem(path, e))? {
                    roots
                        .add(cert.map_err(|e| pem(path, e))?)
                        .map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Modification time and length of each file (`None`: unreadable).
type Stamp = Vec<Option<(SystemTime, u64)>>;

/// The live TLS configuration: what new connections are accepted with.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    current: RwLock<(Arc<ServerConfig>, Stamp)>,
}

impl Tls {
    /// Loads `files` (an error here stops the server from starting).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let stamp = files.stamp();
        let config = Arc::new(files.load()?);
        Ok(Arc::new(Self {
            files,
            current: RwLock::new((config, stamp)),
        }))
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        TlsAcceptor::from(current.0.clone())
    }

    /// Reloads the files; on failure the previous configuration stays and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = self.files.stamp();
        let config = Arc::new(self.files.load()?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (config, stamp);
        Ok(())
    }

    /// Reloads when a file's modification time or length changed since the last load.
    fn reload_if_changed(&self) {
        let changed = {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            current.1 != self.files.stamp()
        };
        if changed {
            self.reload_logged("files changed");
        }
    }

    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => {
                tracing::info!(cert = %self.files.cert.display(), why, "TLS certificate reloaded")
            }
            Err(e) => {
                // Not retried until the files change again (or the next SIGHUP).
                let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
                current.1 = self.files.stamp();
                tracing::error!(error = %e, why, "TLS reload failed; still serving the previous certificate");
            }
        }
    }

    /// Reloads on SIGHUP, and when the files change (checked every `poll`).
    pub fn watch(self: &Arc<Self>, poll: Duration) -> std::io::Result<()> {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = hangup.recv() => tls.reload_logged("SIGHUP"),
                    _ = tick.tick() => tls.reload_if_changed(),
                }
            }
        });
        Ok(())
    }
}
