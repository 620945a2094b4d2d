//! An unfinished upload's checkpoint in the store (`rounds/{i}/{contributor}/upload.json`), written
//! after each stored part: the multipart upload, the bytes stored, and the hash and check states
//! after them. With the tail on local disk it is all an upload needs to resume; dropping both (and
//! aborting the multipart upload) is how an upload is discarded.

use std::{path::PathBuf, sync::Arc, time::Duration};

use coldfuse_shared::{
    api::keys,
    diff::StreamState,
    hash::ResumableSha256,
    store::{PartedUpload, Store, StoreError},
};

use super::tail;
use crate::Coordinator;

/// What an upload has stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The announced diff's hash (a checkpoint of another diff is not resumed).
    pub diff_sha256: String,
    /// The multipart upload to the diff's key.
    pub upload: PartedUpload,
    /// Bytes in its parts.
    pub stored: u64,
    /// The hash of those bytes, so far.
    pub hash: ResumableSha256,
    /// The check of those bytes, so far.
    pub check: StreamState,
}

fn key(iteration: u64, contributor: &str) -> String {
    keys::contribution_file(iteration, contributor, keys::UPLOAD)
}

/// The checkpoint of `contributor`'s upload to round `iteration`, if it is one of `diff_sha256`.
pub async fn load(
    store: &Store,
    iteration: u64,
    contributor: &str,
    diff_sha256: &str,
) -> Result<Option<Checkpoint>, StoreError> {
    Ok(read(store, &key(iteration, contributor))
        .await?
        .filter(|cp| cp.diff_sha256 == diff_sha256))
}

/// The checkpoint at `key`; one that does not parse counts as none (the upload starts over).
async fn read(store: &Store, key: &str) -> Result<Option<Checkpoint>, StoreError> {
    match store.get_json(key).await {
        Err(StoreError::Json { .. }) => Ok(None),
        other => other,
    }
}

/// Saves `cp` (after its last part is stored).
pub async fn save(
    store: &Store,
    iteration: u64,
    contributor: &str,
    cp: &Checkpoint,
) -> Result<(), StoreError> {
    store.put_json(&key(iteration, contributor), cp).await
}

/// Drops the checkpoint of `contributor`'s upload to round `iteration`, then aborts its multipart
/// upload (its parts go with it). In that order: a crash between them leaks parts, it never leaves a
/// checkpoint naming an upload that is gone.
pub async fn drop_stored(
    store: &Store,
    iteration: u64,
    contributor: &str,
) -> Result<(), StoreError> {
    let key = key(iteration, contributor);
    let saved = read(store, &key).await?;
    store.delete(&key).await?;
    if let Some(cp) = saved {
        store.abort_upload(&cp.upload).await?;
    }
    Ok(())
}

/// After a complete upload (its object stored): drops its checkpoint and tail.
pub async fn forget(c: &Coordinator, iteration: u64, contributor: &str) {
    if let Err(e) = c.store.delete(&key(iteration, contributor)).await {
        tracing::warn!(%contributor, iteration, error = %e, "dropping a finished upload's checkpoint");
    }
    for (path, i, who) in tail::list(&c.work).await {
        if i == iteration && who == contributor {
            let _ = tokio::fs::remove_file(path).await;
        }
    }
}

/// Bytes of `contributor`'s diff `diff_sha256` the coordinator holds in round `iteration`: the stored
/// parts, then the tail if it continues them.
pub async fn received(
    c: &Coordinator,
    iteration: u64,
    contributor: &str,
    diff_sha256: &str,
) -> Result<u64, StoreError> {
    let stored = load(&c.store, iteration, contributor, diff_sha256)
        .await?
        .map_or(0, |cp| cp.stored);
    let tail = tail::path(&c.work, iteration, contributor, diff_sha256);
    Ok(match tail::extent(&tail).await {
        Some((start, len)) if start == stored => stored + len,
        _ => stored,
    })
}

/// Discards `contributor`'s unfinished uploads: in round `iteration` and wherever it has a tail. A
/// store failure is logged (the sweeper tries again while the tail exists).
pub async fn discard(c: &Coordinator, iteration: u64, contributor: &str) {
    let mut rounds = vec![iteration];
    let tails = tail::list(&c.work).await;
    rounds.extend(
        tails
            .iter()
            .filter(|(_, _, who)| who == contributor)
            .map(|(_, i, _)| *i),
    );
    rounds.sort_unstable();
    rounds.dedup();
    for round in rounds {
        if let Err(e) = drop_stored(&c.store, round, contributor).await {
            tracing::warn!(%contributor, iteration = round, error = %e, "dropping an upload's parts");
            continue;
        }
        for (path, _, _) in tails
            .iter()
            .filter(|(_, i, who)| *i == round && who == contributor)
        {
            let _ = tokio::fs::remove_file(path).await;
        }
    }
}

/// Discards the uploads whose tail is idle for `idle` or belongs to a closed round, except those
/// whose contributor is uploading now; an idle contribution stays announced and its upload starts
/// again from byte 0. Answers how many were discarded.
pub async fn expire(c: &Arc<Coordinator>, idle: Duration) -> usize {
    let current = c.state.read().await.round_iteration();
    let mut removed = 0;
    for (path, iteration, who) in tail::list(&c.work).await {
        let age = tokio::fs::metadata(&path)
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok());
        if iteration == current && age.is_none_or(|a| a < idle) {
            continue;
        }
        // Holding the slot: no upload can be writing while it goes.
        if let Ok(_slot) = c.uploads.take(&who) {
            if drop_stored(&c.store, iteration, &who).await.is_ok()
                && tokio::fs::remove_file(&path).await.is_ok()
            {
                tracing::info!(contributor = who, iteration, "unfinished upload expired");
                removed += 1;
            }
        }
    }
    removed
}

/// At start-up: discards every upload except those with a tail in `keep` (the round's announced
/// contributions awaiting their upload), so uploads resume across a restart and nothing else lingers.
pub async fn prune(c: &Coordinator, keep: &[PathBuf]) {
    for (path, iteration, who) in tail::list(&c.work).await {
        if !keep.contains(&path) {
            let _ = drop_stored(&c.store, iteration, &who).await;
            let _ = tokio::fs::remove_file(&path).await;
        }
    }
}
