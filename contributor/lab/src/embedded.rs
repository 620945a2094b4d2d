//! A coordinator inside this process, on a local-directory store under a run directory, serving real
//! HTTP on a loopback port: what `demo` and `experiment` run their sites against. A run directory it
//! was started in before is resumed: the store, the admin token and the receipt key are kept there
//! (the token last: a directory without it holds no usable deployment, and its store is made again).

use std::path::Path;

use anyhow::Context;
use coldfuse_contributor::Client;
use coldfuse_coordinator::{fusion_task, init, routes, signing, Coordinator, Store};
use coldfuse_shared::api::DeploymentConfig;

/// The running coordinator.
pub struct Embedded {
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// A client holding the admin token.
    pub admin: Client,
    /// Whether the run directory held a deployment already.
    pub resumed: bool,
}

/// Starts a coordinator on `root/store` (created from `model` with `config` the first time, resumed
/// after), with its work directory in `root/coordinator-work`.
pub async fn start(
    root: &Path,
    model: &Path,
    config: DeploymentConfig,
    name: Option<String>,
) -> anyhow::Result<Embedded> {
    let store_dir = root.join("store");
    let (token_file, key_file) = (root.join("admin-token"), root.join("signing-key.json"));
    // The admin token is written last: without it, a store is from a start that was interrupted
    // before it could be used, and is made again.
    let resumed = token_file.exists();
    if !resumed && store_dir.exists() {
        std::fs::remove_dir_all(&store_dir)?;
        let _ = std::fs::remove_file(&key_file);
    }
    std::fs::create_dir_all(&store_dir)?;
    let store = Store::open(&format!("file://{}", store_dir.canonicalize()?.display()))?;
    let (admin, signer) = if resumed {
        let token = std::fs::read_to_string(&token_file)?.trim().to_string();
        (token, signing::read_key_file(&key_file)?)
    } else {
        let options = init::InitOptions {
            name,
            ..Default::default()
        };
        let done = init::init(&store, model, config, &options).await?;
        signing::replace_key(&key_file, &done.signer)?;
        write_private(&token_file, &done.admin_token)?;
        (done.admin_token, done.signer)
    };
    let work = root.join("coordinator-work");
    let coordinator = Coordinator::load(store, &work, Some(signer)).await?;
    tokio::spawn(fusion_task::run(coordinator.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, routes::router(coordinator)).await;
    });
    let admin = Client::new(&url, Some(admin))?;
    Ok(Embedded {
        url,
        admin,
        resumed,
    })
}

/// Writes a secret readable by its owner only, durably: a temporary file, synced, renamed into place.
pub fn write_private(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let tmp = path.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
