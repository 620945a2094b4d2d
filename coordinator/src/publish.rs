//! Publishing a base: upload every file under its iteration's prefix, then its manifest. Nothing
//! points at it until the caller commits the iteration record and switches `latest`.

use std::path::Path;

use coldfuse_shared::{
    api::{keys, now_unix, BaseManifest, FileEntry},
    diff::BASE_WEIGHTS,
    hash::sha256_file,
};

use crate::{Store, StoreError};

/// Hashes and uploads every regular file of `dir` to `bases/{iteration}/`, then the manifest.
pub async fn publish_base(
    store: &Store,
    iteration: u64,
    dir: &Path,
    architecture: &str,
) -> Result<BaseManifest, StoreError> {
    let local = |source| StoreError::Local {
        path: dir.display().to_string(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(local)? {
        let entry = entry.map_err(local)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map_err(local)?.is_file()
            && !name.starts_with('.')
            && name != keys::BASE_MANIFEST
        {
            names.push(name);
        }
    }
    names.sort();
    let mut files = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let hashed = path.clone();
        let sha256 = tokio::task::spawn_blocking(move || sha256_file(&hashed))
            .await
            .expect("hashing task")
            .map_err(local)?;
        let size = std::fs::metadata(&path).map_err(local)?.len();
        store
            .put_file(&keys::base_file(iteration, &name), &path)
            .await?;
        files.push(FileEntry { name, size, sha256 });
    }
    let base_sha256 = files
        .iter()
        .find(|f| f.name == BASE_WEIGHTS)
        .map(|f| f.sha256.clone())
        .ok_or_else(|| StoreError::Local {
            path: dir.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no model.safetensors"),
        })?;
    let manifest = BaseManifest {
        iteration,
        base_sha256,
        architecture: architecture.to_string(),
        files,
        created_at: now_unix(),
    };
    store
        .put_json(&keys::base_file(iteration, keys::BASE_MANIFEST), &manifest)
        .await?;
    Ok(manifest)
}
