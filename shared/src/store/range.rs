//! One stored object as a [`ByteSource`] for the fusion engine's worker threads: a read that misses
//! fetches a window from its offset to at most `block` bytes further, never past the end of the
//! tensor it reads (so jumping between tensors over-reads nothing), with one ranged GET (retried)
//! that concurrent readers of the same window wait for instead of repeating; the last few windows
//! are kept per object. The engine walks each tensor in order, so N diffs are read once, straight
//! from the store, with memory bounded by the windows kept ([`BLOCKS_KEPT`] × [`block_size`] per
//! diff, [`STREAM_BUDGET`] in all) and no local copy.

use std::{
    collections::VecDeque,
    io,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use bytes::Bytes;
use object_store::{path::Path as StorePath, ObjectStore};
use tokio::runtime::Handle;

use super::{backend, Store, StoreError};
use crate::tensorfile::ByteSource;

/// Windows kept per object (one per worker thread on this scale of machine, plus the next ones).
pub const BLOCKS_KEPT: usize = 4;

/// Memory for the windows of all the diffs a fusion streams at once.
pub const STREAM_BUDGET: u64 = 256 << 20;

/// The window size for streaming `n` objects at once within [`STREAM_BUDGET`]: from 16 MiB (a few
/// objects) down to 64 KiB (thousands).
pub fn block_size(n: usize) -> u64 {
    let per_object = STREAM_BUDGET / (BLOCKS_KEPT as u64 * n.max(1) as u64);
    per_object.clamp(64 << 10, 16 << 20)
}

/// A fetched (or being fetched) byte range of the object.
#[derive(Debug)]
struct Window {
    start: u64,
    end: u64,
    bytes: OnceLock<Result<Bytes, String>>,
}

/// Ranged reads of one object, from threads outside the async runtime.
#[derive(Debug)]
pub struct StoreRange {
    inner: Arc<dyn ObjectStore>,
    path: StorePath,
    len: u64,
    block: u64,
    handle: Handle,
    kept: Mutex<VecDeque<Arc<Window>>>,
    read: Arc<AtomicU64>,
}

impl Store {
    /// The object at `key` as a [`ByteSource`] read in blocks of `block` bytes. Call it inside a
    /// Tokio runtime; read from threads outside it (`spawn_blocking` and threads it starts).
    pub async fn range_source(&self, key: &str, block: u64) -> Result<StoreRange, StoreError> {
        let path = self.path(key);
        let meta = self.inner.head(&path).await.map_err(backend(key))?;
        Ok(StoreRange {
            inner: self.inner.clone(),
            path,
            len: meta.size,
            block: block.max(4096),
            handle: Handle::current(),
            kept: Mutex::default(),
            read: self.read.clone(),
        })
    }
}

/// Attempts of one ranged GET before the read fails.
const ATTEMPTS: u32 = 3;

impl StoreRange {
    /// The window holding `offset`, planning a new one (up to `region_end`) when none does.
    fn window(&self, offset: u64, region_end: u64) -> Arc<Window> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = kept.iter().find(|w| w.start <= offset && offset < w.end) {
            return w.clone();
        }
        let end = region_end
            .min(self.len)
            .min(offset + self.block)
            .max(offset + 1);
        let window = Arc::new(Window {
            start: offset,
            end,
            bytes: OnceLock::new(),
        });
        kept.push_back(window.clone());
        if kept.len() > BLOCKS_KEPT {
            kept.pop_front();
        }
        window
    }

    /// The window's bytes, fetched by the first reader that needs them.
    fn bytes(&self, w: &Window) -> io::Result<Bytes> {
        let fetched = w.bytes.get_or_init(|| self.fetch(w.start, w.end));
        fetched.clone().map_err(|message| {
            // Not kept: the next read tries again.
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.retain(|k| !std::ptr::eq(k.as_ref(), w));
            io::Error::other(message)
        })
    }

    fn fetch(&self, start: u64, end: u64) -> Result<Bytes, String> {
        let mut attempt = 1;
        loop {
            match self
                .handle
                .block_on(self.inner.get_range(&self.path, start..end))
            {
                Ok(bytes) if bytes.len() as u64 == end - start => {
                    self.read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    return Ok(bytes);
                }
                Ok(bytes) => {
                    return Err(format!(
                        "{}: {} bytes at {start}, {} expected",
                        self.path,
                        bytes.len(),
                        end - start
                    ))
                }
                Err(e) if attempt >= ATTEMPTS => return Err(format!("{}: {e}", self.path)),
                Err(e) => {
                    tracing::warn!(path = %self.path, attempt, error = %e, "ranged read failed; retrying");
                    std::thread::sleep(Duration::from_millis(200 << attempt));
                    attempt += 1;
                }
            }
        }
    }
}

impl ByteSource for StoreRange {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64, region_end: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: read past the end", self.path),
                )
            })?;
        let mut pos = offset;
        while pos < end {
            let window = self.window(pos, region_end.max(end));
            let bytes = self.bytes(&window)?;
            let from = (pos - window.start) as usize;
            let n = ((end - pos) as usize).min(bytes.len() - from);
            let at = (pos - offset) as usize;
            buf[at..at + n].copy_from_slice(&bytes[from..from + n]);
            pos += n as u64;
        }
        Ok(())
    }
}
