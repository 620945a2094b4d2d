//! Where the CLI finds its coordinator, token and cache: flags, then `COLDFUSE_*` variables, then the
//! settings file written by `coldfuse login` (`~/.config/coldfuse/config.toml`, or `COLDFUSE_CONFIG`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use coldfuse_shared::private_file::{write_private, Existing};
use serde::{Deserialize, Serialize};

/// The settings file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    /// Coordinator base URL.
    pub coordinator: Option<String>,
    /// Bearer token.
    pub token: Option<String>,
    /// The contributor id the token writes as.
    pub contributor: Option<String>,
    /// Cache of pulled bases.
    pub cache_dir: Option<PathBuf>,
    /// The coordinator's receipt key (hex), pinned at login; receipts are checked against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_key: Option<String>,
    /// How the coordinator's certificate and this site's own are found (`[tls]`).
    #[serde(default, skip_serializing_if = "TlsOptions::is_empty")]
    pub tls: TlsOptions,
}

/// TLS settings of the CLI: a private CA to trust besides the system roots, and a client
/// certificate for coordinators that require mutual TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// Extra CA certificates (PEM) the coordinator's certificate may chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// This site's client certificate chain (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// This site's client private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

impl TlsOptions {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Each field from `over` where set, else from `self`.
    pub fn or(self, over: &TlsOptions) -> TlsOptions {
        TlsOptions {
            ca_cert: over.ca_cert.clone().or(self.ca_cert),
            client_cert: over.client_cert.clone().or(self.client_cert),
            client_key: over.client_key.clone().or(self.client_key),
        }
    }
}

impl SettingsFile {
    /// Reads `path`; a missing file is empty settings.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("{}: not a coldfuse settings file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes `path` readable by its owner only (it holds a token), replacing it atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = path.with_extension("toml.tmp");
        let text = toml::to_string_pretty(self).context("serialising settings")?;
        write_private(&tmp, text.as_bytes(), Existing::Replace)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }
}

/// The settings file's default path.
pub fn default_path() -> PathBuf {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".config"));
    config.join("coldfuse").join("config.toml")
}

/// The default cache of pulled bases.
pub fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache"))
        .join("coldfuse")
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// Connection flags of every command that talks to a coordinator.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectArgs {
    /// Coordinator URL, e.g. http://coordinator:8080 (default: from `coldfuse login`).
    #[arg(long, env = "COLDFUSE_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Bearer token (default: from `coldfuse login`).
    #[arg(long, env = "COLDFUSE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Settings file.
    #[arg(long, env = "COLDFUSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where pulled bases are cached.
    #[arg(long, env = "COLDFUSE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// A private CA certificate (PEM) to trust for the coordinator's TLS certificate, besides the
    /// system roots (saved by `login`).
    #[arg(long, env = "COLDFUSE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// This site's TLS client certificate (PEM), for coordinators that require mutual TLS.
    #[arg(long, env = "COLDFUSE_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "COLDFUSE_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

/// Settings after merging flags, environment and file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Coordinator URL, if any is configured.
    pub coordinator: Option<String>,
    /// Bearer token.
    pub token: Option<String>,
    /// Contributor id remembered at login.
    pub contributor: Option<String>,
    /// Cache directory.
    pub cache_dir: PathBuf,
    /// The receipt key pinned at login (hex).
    pub receipt_key: Option<String>,
    /// TLS settings.
    pub tls: TlsOptions,
    /// The settings file in use.
    pub path: PathBuf,
}

impl Settings {
    /// Merges `args` over the settings file.
    pub fn resolve(args: &ConnectArgs) -> anyhow::Result<Self> {
        let path = args.config.clone().unwrap_or_else(default_path);
        let file = SettingsFile::load(&path)?;
        Ok(Self {
            coordinator: args.coordinator.clone().or(file.coordinator),
            token: args.token.clone().or(file.token),
            contributor: file.contributor,
            receipt_key: file.receipt_key,
            tls: file.tls.or(&TlsOptions {
                ca_cert: args.ca_cert.clone(),
                client_cert: args.client_cert.clone(),
                client_key: args.client_key.clone(),
            }),
            cache_dir: args
                .cache_dir
                .clone()
                .or(file.cache_dir)
                .unwrap_or_else(default_cache),
            path,
        })
    }

    /// A client of the configured coordinator with the configured token and TLS settings.
    pub fn client(&self) -> anyhow::Result<crate::client::Client> {
        crate::client::Client::with_tls(self.coordinator()?, self.token.clone(), &self.tls)
    }

    /// The coordinator URL, or an error that says how to set one.
    pub fn coordinator(&self) -> anyhow::Result<&str> {
        match &self.coordinator {
            Some(url) => Ok(url),
            None => bail!(
                "no coordinator configured: run `coldfuse login --coordinator URL --token TOKEN`, \
                 or pass --coordinator / set COLDFUSE_COORDINATOR"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/config.toml");
        let file = SettingsFile {
            coordinator: Some("http://a:1".into()),
            token: Some("cf_x".into()),
            contributor: Some("site-a".into()),
            cache_dir: None,
            receipt_key: Some("ab".repeat(32)),
            tls: TlsOptions {
                ca_cert: Some("/etc/coldfuse/ca.pem".into()),
                ..TlsOptions::default()
            },
        };
        #[cfg(unix)]
        {
            // A stale, world-readable temp file left behind does not leak its mode to the token.
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let tmp = path.with_extension("toml.tmp");
            std::fs::write(&tmp, "old").unwrap();
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        file.save(&path).unwrap();
        assert_eq!(SettingsFile::load(&path).unwrap(), file);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let args = ConnectArgs {
            coordinator: Some("http://b:2".into()),
            config: Some(path.clone()),
            ..Default::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.coordinator.as_deref(), Some("http://b:2"));
        assert_eq!(s.token.as_deref(), Some("cf_x"));
        assert_eq!(s.contributor.as_deref(), Some("site-a"));
        assert_eq!(s.receipt_key, file.receipt_key);
        assert_eq!(s.tls, file.tls, "the CA saved at login is used");
        let flag = ConnectArgs {
            ca_cert: Some("/tmp/other-ca.pem".into()),
            ..args.clone()
        };
        let s = Settings::resolve(&flag).unwrap();
        assert_eq!(
            s.tls.ca_cert.as_deref(),
            Some(Path::new("/tmp/other-ca.pem"))
        );
        std::fs::write(&path, "coordinatr = 1").unwrap();
        assert!(Settings::resolve(&args).is_err());
        let none = ConnectArgs {
            config: Some(dir.path().join("missing.toml")),
            ..Default::default()
        };
        let err = Settings::resolve(&none).unwrap().coordinator().unwrap_err();
        assert!(err.to_string().contains("coldfuse login"), "{err}");
    }
}
