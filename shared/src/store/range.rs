//! One stored object as a [`ByteSource`] for the fusion engine's worker threads: a read that misses
//! fetches a window from its offset to at most `block` bytes further, never past the end of the
//! tensor it reads (so jumping between tensors over-reads nothing), with one ranged GET (retried)
//! that concurrent readers of the same window wait for instead of repeating; the next window of the
//! same tensor is fetched ahead on the runtime while the engine computes (at most [`READ_AHEAD`]
//! such requests in flight per store); the last windows are kept per object. The engine walks each
//! tensor in order, so N diffs are read once, straight from the store, with memory bounded by the
//! windows kept ([`BLOCKS_KEPT`] × [`block_size`] per diff, [`STREAM_BUDGET`] in all) and no local
//! copy.

use std::{
    collections::VecDeque,
    io,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use object_store::{path::Path as StorePath, ObjectStore};
use tokio::runtime::Handle;

use super::{backend, Store, StoreError};
use crate::tensorfile::ByteSource;

/// Windows of the full size kept per object (one per worker thread on this scale of machine, plus
/// the next ones); smaller windows (small tensors) fill the same bytes.
pub const BLOCKS_KEPT: usize = 4;

/// Windows kept per object at most, whatever their size.
const MAX_WINDOWS: usize = 64;

/// Read-ahead requests in flight at most, over every object of a store.
pub const READ_AHEAD: usize = 16;

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
    bytes: tokio::sync::OnceCell<Result<Bytes, String>>,
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
    read_ahead: Arc<tokio::sync::Semaphore>,
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
            read_ahead: self.read_ahead.clone(),
        })
    }
}

/// Attempts of one ranged GET before the read fails.
const ATTEMPTS: u32 = 3;

impl StoreRange {
    /// The window holding `offset`, planning a new one (up to `region_end`) when none does; whether
    /// it is new.
    fn window(&self, offset: u64, region_end: u64) -> (Arc<Window>, bool) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = kept.iter().find(|w| w.start <= offset && offset < w.end) {
            return (w.clone(), false);
        }
        let end = region_end
            .min(self.len)
            .min(offset + self.block)
            .max(offset + 1);
        let window = Arc::new(Window {
            start: offset,
            end,
            bytes: tokio::sync::OnceCell::new(),
        });
        kept.push_back(window.clone());
        // Bounded by bytes, not count: the small tensors' windows (biases, norms) must not push out
        // a large one another thread is still reading.
        let budget = BLOCKS_KEPT as u64 * self.block;
        while kept.len() > 1
            && (kept.len() > MAX_WINDOWS
                || kept.iter().map(|w| w.end - w.start).sum::<u64>() > budget)
        {
            kept.pop_front();
        }
        (window, true)
    }

    fn fetcher(&self, w: &Window) -> impl std::future::Future<Output = Result<Bytes, String>> {
        let (inner, path, read) = (self.inner.clone(), self.path.clone(), self.read.clone());
        fetch(inner, path, read, w.start, w.end)
    }

    /// The window's bytes, fetched by the first reader that needs them (or by the read-ahead).
    fn bytes(&self, w: &Window) -> io::Result<Bytes> {
        let fetched = self
            .handle
            .block_on(w.bytes.get_or_init(|| self.fetcher(w)));
        fetched.clone().map_err(|message| {
            // Not kept: the next read tries again.
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.retain(|k| !std::ptr::eq(k.as_ref(), w));
            io::Error::other(message)
        })
    }

    /// Starts fetching the window after `w` within the same region, if a read-ahead slot is free.
    fn read_ahead(&self, w: &Window, region_end: u64) {
        if w.end >= region_end.min(self.len) {
            return;
        }
        let Ok(permit) = self.read_ahead.clone().try_acquire_owned() else {
            return;
        };
        let (next, new) = self.window(w.end, region_end);
        if !new {
            return;
        }
        let fetching = self.fetcher(&next);
        self.handle.spawn(async move {
            let _ = next.bytes.get_or_init(|| fetching).await;
            drop(permit);
        });
    }
}

/// One ranged GET of `start..end`, retried.
async fn fetch(
    inner: Arc<dyn ObjectStore>,
    path: StorePath,
    read: Arc<AtomicU64>,
    start: u64,
    end: u64,
) -> Result<Bytes, String> {
    let mut attempt = 1;
    loop {
        match inner.get_range(&path, start..end).await {
            Ok(bytes) if bytes.len() as u64 == end - start => {
                read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                return Ok(bytes);
            }
            Ok(bytes) => {
                return Err(format!(
                    "{path}: {} bytes at {start}, {} expected",
                    bytes.len(),
                    end - start
                ))
            }
            Err(e) if attempt >= ATTEMPTS => return Err(format!("{path}: {e}")),
            Err(e) => {
                tracing::warn!(%path, attempt, error = %e, "ranged read failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                attempt += 1;
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
            let (window, _) = self.window(pos, region_end.max(end));
            self.read_ahead(&window, region_end.max(end));
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
