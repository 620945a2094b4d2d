//! The deployment's receipt key: created at `init` (kept in the store, or in a file the operator
//! gives), loaded at start, its public half always in the store at `signing/public.json`.

use std::path::Path;

use anyhow::Context;
use coldfuse_shared::api::{keys, ReceiptSigner, SigningPublicKey, SigningSecretKey};

use crate::Store;

/// Reads an operator's key file (`coldfuse-coordinator keygen` writes one).
pub fn read_key_file(path: &Path) -> anyhow::Result<ReceiptSigner> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let secret: SigningSecretKey = serde_json::from_slice(&text)
        .with_context(|| format!("{}: not a coldfuse signing key file", path.display()))?;
    ReceiptSigner::from_secret(&secret).with_context(|| path.display().to_string())
}

/// Writes a new key to `path`, readable by its owner only; refuses to overwrite a file.
pub fn write_key_file(path: &Path) -> anyhow::Result<SigningPublicKey> {
    let signer = ReceiptSigner::generate();
    let text = serde_json::to_vec_pretty(&signer.secret())?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    std::io::Write::write_all(&mut file, &text)?;
    file.sync_all()?;
    Ok(signer.public())
}

/// Sets up the key of a new deployment: the operator's (only its public half goes to the store), or
/// a new one kept in the store.
pub async fn init_key(
    store: &Store,
    operator: Option<&ReceiptSigner>,
) -> anyhow::Result<SigningPublicKey> {
    let signer = match operator {
        Some(s) => s.clone(),
        None => {
            let s = ReceiptSigner::generate();
            store.put_json(keys::SIGNING_SECRET, &s.secret()).await?;
            s
        }
    };
    store
        .put_json(keys::SIGNING_PUBLIC, &signer.public())
        .await?;
    Ok(signer.public())
}

/// Loads the key at start: the operator's file when given, else the store's secret. It must match
/// the public key the store publishes; a deployment created before receipts existed gets a new key.
pub async fn load_key(store: &Store, operator: Option<&Path>) -> anyhow::Result<ReceiptSigner> {
    let public: Option<SigningPublicKey> = store.get_json(keys::SIGNING_PUBLIC).await?;
    let signer = match operator {
        Some(path) => read_key_file(path)?,
        None => match store
            .get_json::<SigningSecretKey>(keys::SIGNING_SECRET)
            .await?
        {
            Some(secret) => ReceiptSigner::from_secret(&secret)
                .with_context(|| format!("{} in the store", keys::SIGNING_SECRET))?,
            None if public.is_some() => anyhow::bail!(
                "the deployment's receipt key is kept outside the store: pass --signing-key FILE \
                 (env COLDFUSE_SIGNING_KEY)"
            ),
            None => {
                tracing::warn!("the deployment has no receipt key yet; creating one in the store");
                return store_new_key(store).await;
            }
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

async fn store_new_key(store: &Store) -> anyhow::Result<ReceiptSigner> {
    let signer = ReceiptSigner::generate();
    if !store
        .create_json(keys::SIGNING_SECRET, &signer.secret())
        .await?
    {
        anyhow::bail!("another coordinator created the receipt key concurrently; restart");
    }
    store
        .put_json(keys::SIGNING_PUBLIC, &signer.public())
        .await?;
    Ok(signer)
}
