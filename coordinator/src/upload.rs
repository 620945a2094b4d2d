//! Resumable diff uploads: a spool file per announced diff in the work directory, appended to by
//! `PUT`s with `Content-Range`, one upload per contributor at a time.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use axum::{
    body::Body,
    http::{header, HeaderMap, StatusCode},
};
use futures::StreamExt;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::ApiError;
use coldfuse_shared::api::ErrorCode;

/// The byte range a `PUT` carries: `Content-Range: bytes START-END/TOTAL` (END inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    /// First byte offset.
    pub start: u64,
    /// Bytes in this chunk.
    pub len: u64,
}

/// Parses `Content-Range`; `None` when absent (a whole-file upload). `total` must be the announced size.
pub fn content_range(headers: &HeaderMap, total: u64) -> Result<Option<ChunkRange>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = |why: &str| {
        ApiError::bad_request(
            ErrorCode::BadRange,
            format!("Content-Range {value:?}: {why} (expected `bytes START-END/{total}`)"),
        )
    };
    let text = value.to_str().map_err(|_| bad("not ASCII"))?;
    let spec = text
        .strip_prefix("bytes ")
        .ok_or_else(|| bad("no `bytes` unit"))?;
    let (range, size) = spec.split_once('/').ok_or_else(|| bad("no total"))?;
    let (start, end) = range.split_once('-').ok_or_else(|| bad("no range"))?;
    let parse = |s: &str| s.trim().parse::<u64>().map_err(|_| bad("not a number"));
    let (start, end, size) = (parse(start)?, parse(end)?, parse(size)?);
    if size != total {
        return Err(bad("total differs from the manifest's diff_bytes"));
    }
    if start > end || end >= total {
        return Err(bad("range outside the file"));
    }
    Ok(Some(ChunkRange {
        start,
        len: end - start + 1,
    }))
}

/// Contributors with an upload running; a second concurrent upload of the same contributor is refused.
#[derive(Debug, Default)]
pub struct UploadSlots(Arc<Mutex<HashSet<String>>>);

/// Holds a contributor's upload slot until dropped.
#[derive(Debug)]
pub struct UploadSlot {
    slots: Arc<Mutex<HashSet<String>>>,
    contributor: String,
}

impl UploadSlots {
    /// Takes `contributor`'s slot, or answers 409 `upload_in_progress`.
    pub fn take(&self, contributor: &str) -> Result<UploadSlot, ApiError> {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert(contributor.to_string()) {
            return Err(ApiError::conflict(
                ErrorCode::UploadInProgress,
                format!("an upload of {contributor} is still running; retry in a moment"),
            ));
        }
        Ok(UploadSlot {
            slots: self.0.clone(),
            contributor: contributor.to_string(),
        })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut set = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&self.contributor);
    }
}

/// The spool file of one announced diff. Both parts were validated at the announce (a contributor id
/// of `[A-Za-z0-9._-]`, a 64-hex hash), so the name never leaves `work/uploads/`.
pub fn spool_path(work: &Path, iteration: u64, contributor: &str, diff_sha256: &str) -> PathBuf {
    debug_assert!(coldfuse_shared::api::keys::valid_contributor_id(
        contributor
    ));
    debug_assert!(coldfuse_shared::hash::is_sha256_hex(diff_sha256));
    uploads(work).join(format!("{iteration:06}-{contributor}-{diff_sha256}.part"))
}

fn uploads(work: &Path) -> PathBuf {
    work.join("uploads")
}

/// The contributor a spool file name belongs to (`{iteration:06}-{contributor}-{64 hex}.part`).
fn spool_owner(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".part")?;
    let rest = stem.get(7..stem.len().checked_sub(65)?)?;
    (stem.as_bytes().get(6) == Some(&b'-')).then_some(rest)
}

/// Removes every spool of `contributor` (a new announce replaces the old upload, so a contributor
/// holds at most one spool, i.e. at most `max_diff_bytes` of the disk).
pub async fn discard_spools(work: &Path, contributor: &str) {
    let Ok(mut dir) = tokio::fs::read_dir(uploads(work)).await else {
        return;
    };
    while let Ok(Some(entry)) = dir.next_entry().await {
        let name = entry.file_name();
        if name.to_str().and_then(spool_owner) == Some(contributor) {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
}

/// Removes spools untouched for `idle` (an abandoned upload's bytes), except those whose contributor
/// is uploading now; the contribution stays announced and its upload starts again from byte 0.
/// Answers how many were removed.
pub async fn expire_idle_spools(
    slots: &UploadSlots,
    work: &Path,
    idle: std::time::Duration,
) -> usize {
    let Ok(mut dir) = tokio::fs::read_dir(uploads(work)).await else {
        return 0;
    };
    let mut removed = 0;
    while let Ok(Some(entry)) = dir.next_entry().await {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(spool_owner) else {
            continue;
        };
        let age = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok());
        if age.is_none_or(|a| a < idle) {
            continue;
        }
        // Holding the slot: no upload can be writing to it while it goes.
        if let Ok(_slot) = slots.take(owner) {
            if tokio::fs::remove_file(entry.path()).await.is_ok() {
                tracing::info!(contributor = owner, "idle upload spool expired");
                removed += 1;
            }
        }
    }
    removed
}

/// At start-up: removes every spool except `keep` (those of the round's announced contributions that
/// await their upload), so uploads resume across a restart and nothing else lingers.
pub fn prune_spools(work: &Path, keep: &[PathBuf]) {
    let Ok(dir) = std::fs::read_dir(uploads(work)) else {
        return;
    };
    for entry in dir.flatten() {
        if !keep.contains(&entry.path()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Bytes of a spool received so far (0 when there is none).
pub async fn received(path: &Path) -> u64 {
    tokio::fs::metadata(path).await.map_or(0, |m| m.len())
}

/// Writes the request body into `path` from `start` (dropping anything after it), refusing more than
/// `limit` bytes; answers the spool's size afterwards. Bytes that arrived before a broken connection stay.
/// A body that sends nothing for `idle` ends the request with 408 (the bytes so far stay, so the
/// upload resumes), which releases the contributor's upload slot: a stalled client cannot hold it.
pub async fn receive_at(
    body: Body,
    path: &Path,
    start: u64,
    limit: u64,
    idle: std::time::Duration,
) -> Result<u64, ApiError> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(ApiError::internal)?;
    }
    let have = received(path).await;
    if start > have {
        return Err(offset_error(have));
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .await
        .map_err(ApiError::internal)?;
    file.set_len(start).await.map_err(ApiError::internal)?;
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(ApiError::internal)?;
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    let mut failure = None;
    loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                failure = Some(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    ErrorCode::UploadInterrupted,
                    format!(
                        "no bytes for {} s after byte {}; resume from there",
                        idle.as_secs_f64(),
                        start + written
                    ),
                ));
                break;
            }
        };
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                failure = Some(ApiError::bad_request(
                    ErrorCode::UploadInterrupted,
                    format!("upload broke off after {} bytes: {e}", start + written),
                ));
                break;
            }
        };
        if written + chunk.len() as u64 > limit {
            failure = Some(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                format!("this upload may carry at most {limit} bytes"),
            ));
            break;
        }
        file.write_all(&chunk).await.map_err(ApiError::internal)?;
        written += chunk.len() as u64;
    }
    file.flush().await.map_err(ApiError::internal)?;
    match failure {
        Some(e) => Err(e),
        None => Ok(start + written),
    }
}

/// 409 `upload_offset`: the chunk does not continue the spool.
pub fn offset_error(have: u64) -> ApiError {
    ApiError::conflict(
        ErrorCode::UploadOffset,
        format!("the coordinator holds {have} bytes of this diff; resume from byte {have}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, v.parse().unwrap());
        h
    }

    #[test]
    fn content_range_parses_and_checks() {
        assert_eq!(content_range(&HeaderMap::new(), 10).unwrap(), None);
        assert_eq!(
            content_range(&headers("bytes 0-3/10"), 10).unwrap(),
            Some(ChunkRange { start: 0, len: 4 })
        );
        assert_eq!(
            content_range(&headers("bytes 4-9/10"), 10).unwrap(),
            Some(ChunkRange { start: 4, len: 6 })
        );
        for bad in [
            "bytes 0-3/11",
            "bytes 5-3/10",
            "bytes 0-10/10",
            "0-3/10",
            "bytes x-3/10",
            "bytes 0-3",
        ] {
            let e = content_range(&headers(bad), 10).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRange, "{bad}");
        }
    }

    #[test]
    fn spool_names_name_their_owner() {
        let hash = "ab".repeat(32);
        let path = spool_path(Path::new("/w"), 3, "site-a-b", &hash);
        assert_eq!(
            path,
            Path::new(&format!("/w/uploads/000003-site-a-b-{hash}.part"))
        );
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(spool_owner(name), Some("site-a-b"));
        assert_eq!(spool_owner("000003-x.part"), None);
        assert_eq!(spool_owner("junk"), None);
    }

    #[test]
    fn one_upload_slot_per_contributor() {
        let slots = UploadSlots::default();
        let a = slots.take("a").unwrap();
        assert_eq!(
            slots.take("a").unwrap_err().code,
            ErrorCode::UploadInProgress
        );
        let _b = slots.take("b").unwrap();
        drop(a);
        slots.take("a").unwrap();
    }

    #[tokio::test]
    async fn idle_spools_expire_unless_their_upload_runs() {
        let work = tempfile::tempdir().unwrap();
        let hash = "cd".repeat(32);
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let mut paths = Vec::new();
        for who in ["a", "b", "c"] {
            let path = spool_path(work.path(), 1, who, &hash);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let f = std::fs::File::create(&path).unwrap();
            if who != "c" {
                f.set_modified(old).unwrap();
            }
            paths.push(path);
        }
        let slots = UploadSlots::default();
        let _running = slots.take("b").unwrap();
        let idle = std::time::Duration::from_secs(600);
        assert_eq!(expire_idle_spools(&slots, work.path(), idle).await, 1);
        let left: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        assert_eq!(left, [false, true, true], "a idle, b uploading, c fresh");
    }

    const IDLE: std::time::Duration = std::time::Duration::from_secs(5);

    #[tokio::test]
    async fn receive_appends_truncates_and_refuses_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u/x.part");
        let n = receive_at(Body::from("hello"), &path, 0, 5, IDLE)
            .await
            .unwrap();
        assert_eq!(n, 5);
        let n = receive_at(Body::from("XYZ"), &path, 3, 3, IDLE)
            .await
            .unwrap();
        assert_eq!(n, 6);
        assert_eq!(std::fs::read(&path).unwrap(), b"helXYZ");
        let e = receive_at(Body::from("a"), &path, 9, 1, IDLE)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::UploadOffset);
        let e = receive_at(Body::from("abc"), &path, 6, 2, IDLE)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::TooLarge);
    }
}
