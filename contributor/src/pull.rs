//! `coldfuse pull`: a published base into the local cache, keyed by its weights' SHA-256. Files
//! download to `*.part` and resume with HTTP Range after an interruption; every file is checked
//! against the base manifest's size and hash before the base directory appears (renamed into place).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use coldfuse_shared::{
    api::{routes, BaseManifest},
    diff::BASE_WEIGHTS,
    hash::sha256_file,
};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::{client::Client, progress::bytes_bar};

/// The base manifest kept beside a cached base's files.
pub const CACHED_MANIFEST: &str = "coldfuse-base.json";

/// A base in the local cache.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// Its directory (a plain HF model dir plus [`CACHED_MANIFEST`]).
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: BaseManifest,
}

/// The cache directory of the base whose weights hash to `sha256`.
pub fn cached_dir(cache: &Path, sha256: &str) -> PathBuf {
    cache.join("bases").join(sha256)
}

/// Downloads base `iteration` (the latest when `None`) into `cache`, unless it is there already.
pub async fn pull(client: &Client, cache: &Path, iteration: Option<u64>) -> anyhow::Result<Pulled> {
    let manifest = client.base(iteration).await?;
    check_manifest(&manifest)?;
    let dir = cached_dir(cache, &manifest.base_sha256);
    if dir.join(CACHED_MANIFEST).is_file() {
        tracing::info!(iteration = manifest.iteration, dir = %dir.display(), "base already cached");
        return Ok(Pulled { dir, manifest });
    }
    let staging = dir.with_extension("partial");
    tokio::fs::create_dir_all(&staging)
        .await
        .with_context(|| format!("creating {}", staging.display()))?;
    for file in &manifest.files {
        let done = staging.join(&file.name);
        if done.is_file() {
            continue;
        }
        let part = staging.join(format!("{}.part", file.name));
        download_verified(client, &manifest, &file.name, &part).await?;
        tokio::fs::rename(&part, &done).await?;
    }
    let json = serde_json::to_vec_pretty(&manifest)?;
    tokio::fs::write(staging.join(CACHED_MANIFEST), json).await?;
    match tokio::fs::rename(&staging, &dir).await {
        Ok(()) => {}
        // Another process finished the same base first: theirs is as good as ours.
        Err(_) if dir.join(CACHED_MANIFEST).is_file() => {
            let _ = tokio::fs::remove_dir_all(&staging).await;
        }
        Err(e) => return Err(e).with_context(|| format!("moving the base to {}", dir.display())),
    }
    tracing::info!(iteration = manifest.iteration, dir = %dir.display(), "base pulled and verified");
    Ok(Pulled { dir, manifest })
}

/// Refuses manifests that could write outside the base directory or lack the weights: the base hash
/// names the cache directory, so it must be 64 lowercase hex digits.
pub(crate) fn check_manifest(m: &BaseManifest) -> anyhow::Result<()> {
    if !coldfuse_shared::hash::is_sha256_hex(&m.base_sha256) {
        bail!(
            "base {} has base_sha256 {:?}, not 64 lowercase hex digits: refused",
            m.iteration,
            m.base_sha256
        );
    }
    for f in &m.files {
        let plain = !f.name.is_empty()
            && !f.name.starts_with('.')
            && !f.name.contains(['/', '\\'])
            && f.name != CACHED_MANIFEST;
        if !plain {
            bail!(
                "base {} lists a file named {:?}: refused",
                m.iteration,
                f.name
            );
        }
    }
    let weights = m
        .file(BASE_WEIGHTS)
        .with_context(|| format!("base {} has no {BASE_WEIGHTS}", m.iteration))?;
    if weights.sha256 != m.base_sha256 {
        bail!(
            "base {} manifest is inconsistent: {BASE_WEIGHTS} hashes to {} but the base is {}",
            m.iteration,
            weights.sha256,
            m.base_sha256
        );
    }
    Ok(())
}

/// Downloads one file into `part`, resuming from what is there, retrying transient failures, then
/// checks its size and hash (a mismatch deletes the part and starts over once).
async fn download_verified(
    client: &Client,
    m: &BaseManifest,
    name: &str,
    part: &Path,
) -> anyhow::Result<()> {
    let entry = m.file(name).expect("listed file");
    for attempt in 0..2 {
        client
            .backoff
            .run(&format!("download {name}"), || {
                download(client, m.iteration, name, part, entry.size)
            })
            .await?;
        let size = tokio::fs::metadata(part).await?.len();
        let path = part.to_path_buf();
        let sha = tokio::task::spawn_blocking(move || sha256_file(&path)).await??;
        if size == entry.size && sha == entry.sha256 {
            return Ok(());
        }
        tracing::warn!(
            file = name,
            size,
            sha,
            "downloaded file does not match the manifest"
        );
        tokio::fs::remove_file(part).await?;
        if attempt == 1 {
            bail!(
                "{name} of base {}: got {size} bytes with sha256 {sha}, the manifest says {} bytes \
                 with sha256 {}; the coordinator's store may be corrupt, tell its operator",
                m.iteration,
                entry.size,
                entry.sha256
            );
        }
    }
    unreachable!("the loop returns or fails")
}

/// One download attempt from the current size of `part` to `size`.
async fn download(
    client: &Client,
    iteration: u64,
    name: &str,
    part: &Path,
    size: u64,
) -> Result<(), crate::client::ClientError> {
    let have = tokio::fs::metadata(part).await.map_or(0, |m| m.len());
    if have >= size {
        return Ok(());
    }
    let response = client.base_file(iteration, name, have).await?;
    let io = crate::client::ClientError::local(part);
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .await
        .map_err(io)?;
    let bar = bytes_bar(name, size, have);
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| crate::client::ClientError::Transport {
            url: format!("{}{}", client.url(), routes::base_file(iteration, name)),
            source,
        });
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                file.flush().await.map_err(io)?;
                bar.abandon();
                return Err(e);
            }
        };
        file.write_all(&chunk).await.map_err(io)?;
        bar.inc(chunk.len() as u64);
    }
    file.flush().await.map_err(io)?;
    bar.finish_and_clear();
    Ok(())
}

/// Writes a cached base as a plain HF model dir at `out` (which must not exist or be empty).
pub fn export(pulled: &Pulled, out: &Path) -> anyhow::Result<()> {
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!(
            "{} exists and is not empty; choose another --out",
            out.display()
        );
    }
    let staging = staging_beside(out)?;
    for file in &pulled.manifest.files {
        let from = pulled.dir.join(&file.name);
        let to = staging.path().join(&file.name);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    if out.exists() {
        std::fs::remove_dir(out)?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// A temporary directory in `out`'s parent (same file system), to be renamed to `out` when complete.
pub fn staging_beside(out: &Path) -> anyhow::Result<tempfile::TempDir> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    Ok(tempfile::Builder::new()
        .prefix(".coldfuse-staging-")
        .tempdir_in(parent)?)
}

#[cfg(test)]
mod tests {
    use coldfuse_shared::api::FileEntry;

    use super::*;

    fn manifest(names: &[&str], weights_sha: &str) -> BaseManifest {
        BaseManifest {
            iteration: 3,
            base_sha256: "a".repeat(64),
            architecture: "bert".into(),
            files: names
                .iter()
                .map(|n| FileEntry {
                    name: n.to_string(),
                    size: 1,
                    sha256: if *n == BASE_WEIGHTS {
                        weights_sha.to_string()
                    } else {
                        "b".repeat(64)
                    },
                })
                .collect(),
            created_at: 0,
        }
    }

    #[test]
    fn manifests_that_escape_the_dir_or_disagree_are_refused() {
        let ok = "a".repeat(64);
        check_manifest(&manifest(&[BASE_WEIGHTS, "config.json"], &ok)).unwrap();
        // The base hash names the cache directory: a hostile coordinator cannot make it a path.
        for bad in ["../../evil", "A".repeat(64).as_str(), "a"] {
            let mut m = manifest(&[BASE_WEIGHTS], bad);
            m.base_sha256 = bad.to_string();
            let err = check_manifest(&m).unwrap_err();
            assert!(err.to_string().contains("hex"), "{err}");
        }
        for bad in ["../evil", "a/b", ".hidden", "", CACHED_MANIFEST, "x\\y"] {
            let err = check_manifest(&manifest(&[BASE_WEIGHTS, bad], &ok)).unwrap_err();
            assert!(err.to_string().contains("refused"), "{bad}: {err}");
        }
        let err = check_manifest(&manifest(&["config.json"], &ok)).unwrap_err();
        assert!(err.to_string().contains("no model.safetensors"), "{err}");
        let err = check_manifest(&manifest(&[BASE_WEIGHTS], &"c".repeat(64))).unwrap_err();
        assert!(err.to_string().contains("inconsistent"), "{err}");
    }
}
