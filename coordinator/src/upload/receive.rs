//! One request of an upload: bytes are appended to what the coordinator holds, each full [`PART`]
//! is hashed and checked, then stored as the next part of the multipart upload and checkpointed; the
//! rest waits on local disk as the tail. The request that brings the last byte ends with
//! [`Received::Complete`], and [`finish`] checks the last bytes, stores them and completes the
//! object, before any verdict.

use std::{path::PathBuf, time::Duration};

use axum::{body::Body, http::StatusCode};
use bytes::Bytes;
use futures::StreamExt;

use coldfuse_shared::{
    api::{keys, ErrorCode},
    diff::{BaseInfo, DiffError, DiffManifest, DiffStats, StreamCheck, DIFF_FILE},
    hash::ResumableSha256,
    store::PartedUpload,
};

use super::{
    checkpoint::{self, Checkpoint},
    offset_error, tail,
};
use crate::{ApiError, Coordinator};

/// Bytes per stored part (S3 needs at least 5 MiB for every part but the last): also the most an
/// unfinished upload keeps on local disk, and about what a running request holds in memory.
pub const PART: usize = 8 << 20;

/// The fewest new bytes a request that neither stores a part nor ends the diff must bring for them
/// to be kept, for diffs of 8 MiB and more; an eighth of smaller ones. Each keep rewrites the tail
/// (at most a part, or the diff), so a write costs at most 8 × the bytes that caused it.
pub const MIN_KEEP: u64 = 1 << 20;

/// [`MIN_KEEP`] for a diff of `total` bytes.
pub fn min_keep(total: u64) -> u64 {
    MIN_KEEP.min(total / 8)
}

/// A contributor's fault found in its bytes: the rejection to record.
#[derive(Debug)]
pub struct Fault {
    /// Why.
    pub code: ErrorCode,
    /// What the contributor is told.
    pub message: String,
}

/// The hash and the check of the bytes so far.
#[derive(Debug, Clone)]
struct Checker {
    hash: ResumableSha256,
    check: StreamCheck,
}

/// An upload while a request feeds it.
#[derive(Debug)]
pub struct Upload {
    iteration: u64,
    contributor: String,
    manifest: DiffManifest,
    /// The multipart upload, once a part is stored.
    parts: Option<PartedUpload>,
    /// Bytes in the stored parts.
    stored: u64,
    /// The hash and check of the stored parts.
    checker: Checker,
    /// The bytes after the stored parts.
    buf: Vec<u8>,
    tail: PathBuf,
}

/// What a request left.
#[derive(Debug)]
pub enum Received {
    /// The coordinator holds this many bytes of the diff.
    Partial(u64),
    /// Every byte arrived; [`finish`] stores the object.
    Complete(Box<Upload>),
}

/// Continues the upload of `contributor`'s announced diff in round `iteration` with `body`, from byte
/// `start` (at most `limit` bytes). A body that sends nothing for `idle` ends with 408 and a broken
/// one with 400 (what arrived stays if it is at least [`min_keep`] bytes or stored a part, so the
/// upload resumes). `Ok(Err(_))` is a fault in the bytes
/// (reject); `Err` is a protocol or server error.
#[allow(clippy::too_many_arguments)]
pub async fn receive(
    c: &Coordinator,
    iteration: u64,
    contributor: &str,
    manifest: &DiffManifest,
    base: &BaseInfo,
    body: Body,
    start: u64,
    limit: u64,
    idle: Duration,
) -> Result<Result<Received, Fault>, ApiError> {
    let sha = &manifest.diff_sha256;
    let tail_path = tail::path(&c.work, iteration, contributor, sha);
    let mut saved = checkpoint::load(&c.store, iteration, contributor, sha).await?;
    if saved.is_some()
        && c.store
            .size(&keys::contribution_file(iteration, contributor, DIFF_FILE))
            .await?
            == Some(manifest.diff_bytes)
    {
        // Completed, but stopped before its verdict: its parts are gone; the upload starts over.
        checkpoint::forget(c, iteration, contributor).await;
        saved = None;
    }
    let stored = saved.as_ref().map_or(0, |cp| cp.stored);
    let tail = tail::read(&tail_path).await;
    let has_tail = tail.is_some();
    let mut buf = match tail {
        Some((at, bytes)) if at == stored => bytes,
        _ => Vec::new(),
    };
    let have = stored + buf.len() as u64;
    if start > have {
        return Err(offset_error(have));
    }
    // What stays durable if this request keeps nothing: the parts, and the tail if it continues them.
    let mut durable = have;
    let saved = match (start < stored, start) {
        (true, 0) => {
            // A new upload from byte 0 replaces the stored parts.
            checkpoint::drop_stored(&c.store, iteration, contributor).await?;
            buf.clear();
            durable = 0;
            None
        }
        (true, _) => return Err(offset_error(have)),
        (false, _) => {
            buf.truncate((start - stored) as usize);
            saved
        }
    };
    let checker = match &saved {
        Some(cp) => Checker {
            hash: cp.hash.clone(),
            check: StreamCheck::restore(manifest.clone(), base, &cp.check)
                .map_err(ApiError::internal)?,
        },
        None => match StreamCheck::new(manifest.clone(), base) {
            Ok(check) => Checker {
                hash: ResumableSha256::default(),
                check,
            },
            Err(e) => return fault(e),
        },
    };
    buf.reserve(PART.saturating_sub(buf.len()));
    let mut up = Upload {
        iteration,
        contributor: contributor.to_string(),
        manifest: manifest.clone(),
        stored: saved.as_ref().map_or(0, |cp| cp.stored),
        parts: saved.map(|cp| cp.upload),
        checker,
        buf,
        tail: tail_path,
    };
    // The tail marks the upload as unfinished for the sweeper before any part is stored.
    if !has_tail {
        tail::write(&up.tail, up.stored, up.buf.clone())
            .await
            .map_err(ApiError::internal)?;
    }
    let total = manifest.diff_bytes;
    let stored_before = up.stored;
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    let mut failure = None;
    'body: loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                failure = Some(Broke::Interrupted(e.to_string()));
                break;
            }
            Err(_) => {
                failure = Some(Broke::Idle);
                break;
            }
        };
        if written + chunk.len() as u64 > limit {
            failure = Some(Broke::TooLarge);
            break;
        }
        up.buf.extend_from_slice(&chunk);
        written += chunk.len() as u64;
        // The last part waits for `finish`: it is stored only once the whole diff checked out.
        while up.buf.len() >= PART && up.stored + (PART as u64) < total {
            match up.store_part(c).await {
                Ok(Ok(())) => {}
                Ok(Err(f)) => return Ok(Err(f)),
                Err(e) => {
                    failure = Some(Broke::Store(e));
                    break 'body;
                }
            }
        }
    }
    let size = up.stored + up.buf.len() as u64;
    if failure.is_none() && size == total {
        return Ok(Ok(Received::Complete(Box::new(up))));
    }
    // The tail is rewritten whole (up to a part): after a stored part (which made the old one stale),
    // or for at least MIN_KEEP new bytes, so tiny chunks cannot make the coordinator rewrite
    // megabytes each. Fewer are dropped, and the answer says where to resume.
    if up.stored > stored_before || size >= durable + min_keep(total) {
        let rest = std::mem::take(&mut up.buf);
        tail::write(&up.tail, up.stored, rest)
            .await
            .map_err(ApiError::internal)?;
        durable = size;
    }
    match failure {
        Some(broke) => Err(broke.error(start + written, durable, idle, limit)),
        None => Ok(Ok(Received::Partial(durable))),
    }
}

/// Why a request's body ended early.
enum Broke {
    Interrupted(String),
    Idle,
    TooLarge,
    Store(ApiError),
}

impl Broke {
    /// The answer, after `at` bytes arrived of which the coordinator holds `held`.
    fn error(self, at: u64, held: u64, idle: Duration, limit: u64) -> ApiError {
        match self {
            Self::Interrupted(e) => ApiError::bad_request(
                ErrorCode::UploadInterrupted,
                format!("upload broke off after {at} bytes ({e}); resume from byte {held}"),
            ),
            Self::Idle => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::UploadInterrupted,
                format!(
                    "no bytes for {} s after byte {at}; resume from byte {held}",
                    idle.as_secs_f64()
                ),
            ),
            Self::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                format!("this upload may carry at most {limit} bytes"),
            ),
            Self::Store(e) => e,
        }
    }
}

/// Checks the last bytes of a complete upload (hash first, then values, then the norm `bound`:
/// ratio and the base's norm), then stores them and completes the object under the diff's key.
pub async fn finish(
    c: &Coordinator,
    mut up: Box<Upload>,
    bound: Option<(f64, f64)>,
) -> Result<Result<DiffStats, Fault>, ApiError> {
    let last = std::mem::take(&mut up.buf);
    let mut checker = up.checker.clone();
    let m = up.manifest.clone();
    let _permit = c.validations.acquire().await.map_err(ApiError::internal)?;
    let (last, checked) = tokio::task::spawn_blocking(move || {
        checker.hash.update(&last);
        let (bytes, sha256) = (checker.hash.len(), checker.hash.clone().finalize_hex());
        if bytes != m.diff_bytes || sha256 != m.diff_sha256 {
            let message = format!(
                "received {bytes} bytes with sha256 {sha256}; the manifest says {} bytes with sha256 {}",
                m.diff_bytes, m.diff_sha256
            );
            return (last, Ok(Err(Fault { code: ErrorCode::Integrity, message })));
        }
        let stats = checker.check.feed(&last).and_then(|()| checker.check.finish());
        let stats = stats.and_then(|stats| match bound {
            Some((ratio, norm)) if stats.l2_norm > ratio * norm => Err(DiffError::NormBound {
                norm: stats.l2_norm,
                bound: ratio * norm,
                ratio,
            }),
            _ => Ok(stats),
        });
        let checked = match stats {
            Ok(stats) => Ok(Ok(stats)),
            Err(e) => fault(e),
        };
        (last, checked)
    })
    .await
    .map_err(ApiError::internal)?;
    drop(_permit);
    let stats = match checked? {
        Ok(stats) => stats,
        Err(f) => return Ok(Err(f)),
    };
    // Durable before any verdict: the last part, then the whole object.
    let key = up.diff_key();
    match up.parts.take() {
        Some(mut parts) => {
            c.store.put_part(&mut parts, up.stored, last.into()).await?;
            c.store
                .complete_upload(&parts, up.manifest.diff_bytes)
                .await?;
        }
        None => c.store.put_bytes(&key, last.into()).await?,
    }
    Ok(Ok(stats))
}

impl Upload {
    fn diff_key(&self) -> String {
        keys::contribution_file(self.iteration, &self.contributor, DIFF_FILE)
    }

    /// Checks the first [`PART`] bytes of the buffer, stores them as the next part and checkpoints.
    /// The buffer and the check advance only once the part is stored: after a store error they
    /// still say what the stored parts and the tail hold.
    async fn store_part(&mut self, c: &Coordinator) -> Result<Result<(), Fault>, ApiError> {
        let part = Bytes::copy_from_slice(&self.buf[..PART]);
        let mut checker = self.checker.clone();
        let permit = c.validations.acquire().await.map_err(ApiError::internal)?;
        let fed = part.clone();
        let (checker, fed) = tokio::task::spawn_blocking(move || {
            checker.hash.update(&fed);
            let result = checker.check.feed(&fed);
            (checker, result)
        })
        .await
        .map_err(ApiError::internal)?;
        drop(permit);
        if let Err(e) = fed {
            return fault(e);
        }
        let key = self.diff_key();
        let mut parts = match &self.parts {
            Some(parts) => parts.clone(),
            None => c.store.start_upload(&key).await?,
        };
        c.store.put_part(&mut parts, self.stored, part).await?;
        let cp = Checkpoint {
            diff_sha256: self.manifest.diff_sha256.clone(),
            upload: parts.clone(),
            stored: self.stored + PART as u64,
            hash: checker.hash.clone(),
            check: checker.check.save(),
        };
        checkpoint::save(&c.store, self.iteration, &self.contributor, &cp).await?;
        self.parts = Some(parts);
        self.stored = cp.stored;
        self.checker = checker;
        self.buf.drain(..PART);
        Ok(Ok(()))
    }
}

/// A check failure as the contributor's fault, or ours (a local I/O error).
fn fault<T>(e: DiffError) -> Result<Result<T, Fault>, ApiError> {
    match e {
        e if e.is_local_io() => Err(ApiError::internal(e)),
        e => Ok(Err(Fault {
            code: e.code(),
            message: e.to_string(),
        })),
    }
}
