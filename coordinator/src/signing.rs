//! The deployment's receipt key. Its secret half never lives in the store (an auditor who can read the
//! store must be able to verify receipts, not forge them): `init` writes it to a file of the operator's
//! (mode 600; by default under the coordinator's config dir, named after the store URL), `serve` reads it
//! from there. Only the public half is stored, at `signing/public.json`. A deployment made before this
//! kept its secret in the store; it is still loaded from there, with a warning to move it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use coldfuse_shared::{
    api::{keys, ReceiptSigner, SigningPublicKey, SigningSecretKey},
    private_file::{write_private, Existing},
};

use crate::Store;

/// Reads an operator's key file (`coldfuse-coordinator keygen` or `init` writes one).
pub fn read_key_file(path: &Path) -> anyhow::Result<ReceiptSigner> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let secret: SigningSecretKey = serde_json::from_slice(&text)
        .with_context(|| format!("{}: not a coldfuse signing key file", path.display()))?;
    ReceiptSigner::from_secret(&secret).with_context(|| path.display().to_string())
}

/// Writes a new key to `path`, readable by its owner only; refuses to overwrite a file.
pub fn write_key_file(path: &Path) -> anyhow::Result<SigningPublicKey> {
    let signer = ReceiptSigner::generate();
    write_key(path, &signer)?;
    Ok(signer.public())
}

/// Writes `signer`'s secret to `path` (created, mode 600, parent dirs made); refuses to overwrite.
pub fn write_key(path: &Path, signer: &ReceiptSigner) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_vec_pretty(&signer.secret())?;
    write_private(path, &text, Existing::Refuse)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    Ok(())
}

/// Writes `signer`'s secret to `path` (mode 600) through a temporary file renamed over any older key
/// there: for `init`, once it knows the store holds no deployment (an older file is a dead one's).
pub fn replace_key(path: &Path, signer: &ReceiptSigner) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    write_key(&tmp, signer)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Where `init` keeps the receipt key of the deployment at `store_url` unless told otherwise:
/// `$COLDFUSE_COORDINATOR_HOME`, else `$XDG_CONFIG_HOME/coldfuse-coordinator`, else
/// `~/.config/coldfuse-coordinator`; one file per store URL.
pub fn default_key_path(store_url: &str) -> PathBuf {
    let dir = std::env::var_os("COLDFUSE_COORDINATOR_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CONFIG_HOME")
                .map(|d| PathBuf::from(d).join("coldfuse-coordinator"))
        })
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
            home.join(".config").join("coldfuse-coordinator")
        });
    let id = &coldfuse_shared::hash::sha256_bytes(store_url.as_bytes())[..12];
    dir.join(format!("signing-key-{id}.json"))
}

/// Publishes the public half of a new deployment's key.
pub async fn init_key(store: &Store, signer: &ReceiptSigner) -> anyhow::Result<SigningPublicKey> {
    store
        .put_json(keys::SIGNING_PUBLIC, &signer.public())
        .await?;
    Ok(signer.public())
}

/// The key to sign with at start: the operator's (`Some`), else a legacy secret found in the store. It
/// must match the public key the store publishes.
pub async fn load_key(
    store: &Store,
    operator: Option<ReceiptSigner>,
) -> anyhow::Result<ReceiptSigner> {
    let public: Option<SigningPublicKey> = store.get_json(keys::SIGNING_PUBLIC).await?;
    let signer = match operator {
        Some(s) => s,
        None => match store
            .get_json::<SigningSecretKey>(keys::SIGNING_SECRET)
            .await?
        {
            Some(secret) => {
                tracing::warn!(
                    "the receipt key's secret is kept in the store, where anyone who can read the \
                     store can forge receipts: copy {} to a file (mode 600), delete it from the \
                     store and pass --signing-key FILE",
                    keys::SIGNING_SECRET
                );
                ReceiptSigner::from_secret(&secret)
                    .with_context(|| format!("{} in the store", keys::SIGNING_SECRET))?
            }
            None => anyhow::bail!(
                "no receipt key: pass --signing-key FILE (env COLDFUSE_SIGNING_KEY; `init` wrote it \
                 to {} unless told otherwise; `keygen` makes one for a deployment that has none)",
                default_key_path(store.url()).display()
            ),
        },
    };
    match public {
        Some(p) if p != signer.public() => anyhow::bail!(
            "the receipt key given (id {}) is not the deployment's (id {}): receipts signed with it \
             would not verify",
            signer.public().key_id,
            p.key_id
        ),
        Some(_) => {}
        None => {
            store
                .put_json(keys::SIGNING_PUBLIC, &signer.public())
                .await?
        }
    }
    Ok(signer)
}
