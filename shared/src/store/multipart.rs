//! Resumable multipart writes of one object: parts are uploaded one after another (each durable when
//! its call returns), the upload is a small serialisable value a caller saves between parts and
//! continues after a restart, and the object appears whole at [`Store::complete_upload`] (or never,
//! after [`Store::abort_upload`]). S3-compatible and in-memory stores use their multipart API; a
//! `file://` store writes a staging file beside the deployment (`.uploads/`) and renames it.

use std::os::unix::fs::FileExt;

use bytes::Bytes;
use object_store::{multipart::PartId, PutPayload};

use super::{backend, local, Store, StoreError};

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartedUpload {
    /// The key the object will have.
    pub key: String,
    /// The store's upload id.
    pub id: String,
    /// The stored parts' ids, in order.
    pub parts: Vec<String>,
}

/// A store's multipart API.
#[derive(Clone)]
pub(super) struct Api(pub(super) std::sync::Arc<dyn object_store::multipart::MultipartStore>);

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MultipartStore")
    }
}

/// Staging files of a `file://` store, beside its objects.
const STAGING: &str = ".uploads";

impl Store {
    /// Starts a multipart upload of `key`.
    pub async fn start_upload(&self, key: &str) -> Result<PartedUpload, StoreError> {
        let id = match (&self.multipart, &self.local) {
            (Some(Api(m)), _) => m
                .create_multipart(&self.path(key))
                .await
                .map_err(backend(key))?,
            (None, Some(dir)) => {
                let staging = dir.join(STAGING);
                tokio::fs::create_dir_all(&staging)
                    .await
                    .map_err(local(&staging))?;
                hex::encode(rand::random::<[u8; 16]>())
            }
            (None, None) => return Err(self.no_multipart(key)),
        };
        Ok(PartedUpload {
            key: key.to_string(),
            id,
            parts: Vec::new(),
        })
    }

    /// Stores the next part of `upload`, `bytes` from byte `offset` of the object (every part but
    /// the last must be at least 5 MiB on S3); durable when it returns.
    pub async fn put_part(
        &self,
        upload: &mut PartedUpload,
        offset: u64,
        bytes: Bytes,
    ) -> Result<(), StoreError> {
        let key = upload.key.as_str();
        let part = match (&self.multipart, &self.local) {
            (Some(Api(m)), _) => {
                let path = self.path(key);
                let index = upload.parts.len();
                m.put_part(&path, &upload.id, index, PutPayload::from(bytes))
                    .await
                    .map_err(backend(key))?
                    .content_id
            }
            (None, Some(_)) => {
                let file = self.staging(upload)?;
                let first = upload.parts.is_empty();
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    // Only the first part creates the file: a later one must find every byte
                    // before it (a staging file that went away is an error, never zeros).
                    let f = std::fs::OpenOptions::new()
                        .create(first)
                        .truncate(false)
                        .write(true)
                        .open(&file)?;
                    if f.metadata()?.len() < offset {
                        return Err(std::io::Error::other("the staging file lost earlier parts"));
                    }
                    f.write_all_at(&bytes, offset)?;
                    f.sync_data()
                })
                .await
                .map_err(|e| StoreError::Local {
                    path: key.to_string(),
                    source: std::io::Error::other(e),
                })?
                .map_err(|source| StoreError::Local {
                    path: key.to_string(),
                    source,
                })?;
                offset.to_string()
            }
            (None, None) => return Err(self.no_multipart(key)),
        };
        upload.parts.push(part);
        Ok(())
    }

    /// Makes the object of `upload` appear, whole (its parts in order, `size` bytes in all).
    pub async fn complete_upload(
        &self,
        upload: &PartedUpload,
        size: u64,
    ) -> Result<(), StoreError> {
        let key = upload.key.as_str();
        match (&self.multipart, &self.local) {
            (Some(Api(m)), _) => {
                let parts = upload
                    .parts
                    .iter()
                    .map(|p| PartId {
                        content_id: p.clone(),
                    })
                    .collect();
                m.complete_multipart(&self.path(key), &upload.id, parts)
                    .await
                    .map_err(backend(key))?;
                Ok(())
            }
            (None, Some(dir)) => {
                let (from, to) = (self.staging(upload)?, dir.join(key));
                let len = tokio::fs::metadata(&from)
                    .await
                    .map_err(local(&from))?
                    .len();
                if len != size {
                    let message = format!("staging file holds {len} bytes, not {size}");
                    return Err(local(&from)(std::io::Error::other(message)));
                }
                if let Some(parent) = to.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(local(parent))?;
                }
                tokio::fs::rename(&from, &to).await.map_err(local(&from))?;
                self.sync(key).await
            }
            (None, None) => Err(self.no_multipart(key)),
        }
    }

    /// Drops `upload` and its stored parts (an upload already gone is fine).
    pub async fn abort_upload(&self, upload: &PartedUpload) -> Result<(), StoreError> {
        let key = upload.key.as_str();
        match (&self.multipart, &self.local) {
            (Some(Api(m)), _) => match m.abort_multipart(&self.path(key), &upload.id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(backend(key)(e)),
            },
            (None, Some(_)) => {
                let file = self.staging(upload)?;
                match tokio::fs::remove_file(&file).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(local(&file)(e)),
                    _ => Ok(()),
                }
            }
            (None, None) => Err(self.no_multipart(key)),
        }
    }

    /// The staging file of a `file://` upload (its id is 32 hex digits, never a path).
    fn staging(&self, upload: &PartedUpload) -> Result<std::path::PathBuf, StoreError> {
        let dir = self.local.as_ref().expect("a file:// store");
        let id = &upload.id;
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Local {
                path: upload.key.clone(),
                source: std::io::Error::other(format!("`{id}` is not an upload id")),
            });
        }
        Ok(dir.join(STAGING).join(id))
    }

    fn no_multipart(&self, key: &str) -> StoreError {
        StoreError::Url {
            url: self.url.clone(),
            message: format!(
                "`{key}`: this store takes no resumable uploads (use s3:// or file://)"
            ),
        }
    }
}
