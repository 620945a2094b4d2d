//! Resumable diff uploads, one per contributor at a time, `PUT` whole or in `Content-Range` chunks.
//!
//! The bytes go straight to the object store as a multipart upload of [`PART`]-byte parts (the diff's
//! own key), each part hashed and checked ([`coldfuse_shared::diff::StreamCheck`]) before it is stored
//! and followed by a checkpoint in the store (`upload.json`: the upload id, the parts, the hash and
//! check states), so an upload resumes after a restart without reading its parts again. What a
//! request leaves short of a part waits on local disk ([`tail`]). Local disk: under one part per
//! unfinished upload; memory: about one part per running request.

mod checkpoint;
mod receive;
pub mod tail;

pub use checkpoint::{discard, expire, forget, prune, received};
pub use receive::{finish, receive, Fault, Received, Upload, PART};

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use axum::http::{header, HeaderMap};

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

/// 409 `upload_offset`: the chunk does not continue what the coordinator holds.
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
}
