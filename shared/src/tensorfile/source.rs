//! Where a tensor file's bytes come from: a local file read with `pread`, or anything else that can
//! read a byte range (a diff in an object store, `store::StoreRange`), so the fusion engine can read
//! diffs where they are kept instead of copying them first.

use std::{fmt, fs::File, os::unix::fs::FileExt, path::Path};

/// Positional reads of an immutable sequence of bytes, from any thread.
pub trait ByteSource: Send + Sync + fmt::Debug {
    /// Its size in bytes.
    fn len(&self) -> u64;

    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the bytes from `offset` (an error when they run out). `region_end` ends the
    /// region (a tensor) the read belongs to: a source that reads ahead reads no further.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64, region_end: u64) -> std::io::Result<()>;
}

/// A local file.
#[derive(Debug)]
pub struct LocalFile {
    file: File,
    len: u64,
}

impl LocalFile {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }
}

impl ByteSource for LocalFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64, _region_end: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}
