//! `coldfuse-coordinator tls-cert`: a private CA, a server certificate for the coordinator's host
//! names and addresses, and optional site (client) certificates for mutual TLS — enough for a test
//! deployment or the compose file. Production deployments bring certificates from their own CA or
//! ACME; the server only reads PEM files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use coldfuse_shared::private_file::{write_with_mode, Existing};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Settings of `tls-cert`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertArgs {
    /// Directory to write into (created; existing files are not overwritten).
    #[arg(long)]
    pub out: PathBuf,
    /// Host name or IP address the server certificate is valid for (repeatable).
    #[arg(long = "host", required = true)]
    pub hosts: Vec<String>,
    /// Also issue a client certificate for this site (repeatable), for `serve --client-ca`.
    #[arg(long = "client")]
    pub clients: Vec<String>,
}

/// The files written, in order: `ca.pem`, `server.pem`, `server-key.pem`, then per site
/// `client-SITE.pem`, `client-SITE-key.pem`. Keys are mode 600; the CA's key is not kept.
pub fn generate(args: &CertArgs) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "coldfuse private CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut written = vec![write_new(&args.out.join("ca.pem"), &ca_cert.pem(), false)?];

    let mut server = CertificateParams::new(args.hosts.clone())?;
    server
        .distinguished_name
        .push(DnType::CommonName, args.hosts[0].as_str());
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;
    written.push(write_new(
        &args.out.join("server.pem"),
        &server_cert.pem(),
        false,
    )?);
    written.push(write_new(
        &args.out.join("server-key.pem"),
        &server_key.serialize_pem(),
        true,
    )?);

    for site in &args.clients {
        anyhow::ensure!(
            !site.is_empty()
                && site
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "client name {site:?}: use letters, digits, - and _"
        );
        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client
            .distinguished_name
            .push(DnType::CommonName, site.as_str());
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = client.signed_by(&key, &issuer)?;
        written.push(write_new(
            &args.out.join(format!("client-{site}.pem")),
            &cert.pem(),
            false,
        )?);
        written.push(write_new(
            &args.out.join(format!("client-{site}-key.pem")),
            &key.serialize_pem(),
            true,
        )?);
    }
    Ok(written)
}

fn write_new(path: &Path, text: &str, secret: bool) -> anyhow::Result<PathBuf> {
    let mode = if secret { 0o600 } else { 0o644 };
    write_with_mode(path, text.as_bytes(), mode, Existing::Refuse)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    Ok(path.to_path_buf())
}
