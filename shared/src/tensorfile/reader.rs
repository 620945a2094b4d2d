//! Positional reads of single tensors (or element ranges of them) from a checked safetensors file.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use half::{bf16, f16};

use super::{ByteSource, Dtype, Header, LocalFile, TensorFileError, TensorInfo, MAX_HEADER_BYTES};

/// An open safetensors file whose header has been checked; tensors are read on demand.
#[derive(Debug)]
pub struct TensorFile {
    path: PathBuf,
    source: Arc<dyn ByteSource>,
    len: u64,
    /// The parsed header.
    pub header: Header,
}

impl TensorFile {
    /// Opens `path` and checks its header against the file size.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TensorFileError> {
        Self::open_limited(path, MAX_HEADER_BYTES)
    }

    /// As [`TensorFile::open`], refusing a header longer than `limit` bytes (at most
    /// [`MAX_HEADER_BYTES`]) before reading it: for files from untrusted senders whose tensor count
    /// is known, so a header bomb costs nothing.
    pub fn open_limited(path: impl AsRef<Path>, limit: u64) -> Result<Self, TensorFileError> {
        let path = path.as_ref();
        let file = LocalFile::open(path).map_err(|e| TensorFileError::io(path, e))?;
        Self::open_source(path, Arc::new(file), limit)
    }

    /// As [`TensorFile::open_limited`], reading from `source`; `name` stands for it in errors.
    pub fn open_source(
        name: &Path,
        source: Arc<dyn ByteSource>,
        limit: u64,
    ) -> Result<Self, TensorFileError> {
        let limit = limit.min(MAX_HEADER_BYTES);
        let path = name.to_path_buf();
        let len = source.len();
        if len < 8 {
            return Err(TensorFileError::Truncated {
                path,
                len,
                needed: 8,
            });
        }
        let mut prefix = [0u8; 8];
        source
            .read_exact_at(&mut prefix, 0, 8)
            .map_err(|e| TensorFileError::io(&path, e))?;
        let header_len = u64::from_le_bytes(prefix);
        if header_len > limit {
            return Err(TensorFileError::HeaderTooLarge {
                path,
                len: header_len,
                limit,
            });
        }
        if 8 + header_len > len {
            return Err(TensorFileError::Truncated {
                path,
                len,
                needed: 8 + header_len,
            });
        }
        let mut json = vec![0u8; header_len as usize];
        source
            .read_exact_at(&mut json, 8, 8 + header_len)
            .map_err(|e| TensorFileError::io(&path, e))?;
        let header = Header::parse(&path, &json, len)?;
        Ok(Self {
            path,
            source,
            len,
            header,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty (never true for a file that opened).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tensor called `name`, or a `MissingTensor` error.
    pub fn info(&self, name: &str) -> Result<&TensorInfo, TensorFileError> {
        self.header
            .get(name)
            .ok_or_else(|| TensorFileError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }

    /// Reads the raw bytes of elements `start..start + out.len() / dtype size` of `info` into `out`.
    pub fn read_raw(
        &self,
        info: &TensorInfo,
        start: usize,
        out: &mut [u8],
    ) -> Result<(), TensorFileError> {
        let size = info.dtype.size();
        let count = out.len() / size;
        if !out.len().is_multiple_of(size) || start + count > info.numel() {
            return Err(self.range_error(info, start, start + count));
        }
        let offset = info.offset + (start * size) as u64;
        self.source
            .read_exact_at(out, offset, info.offset + info.nbytes)
            .map_err(|e| TensorFileError::io(&self.path, e))
    }

    /// Reads elements `start..start + out.len()` of a float tensor (F32, F16 or BF16) as f32;
    /// `scratch` is reused for the conversion of 16-bit types.
    pub fn read_f32(
        &self,
        info: &TensorInfo,
        start: usize,
        out: &mut [f32],
        scratch: &mut Vec<u16>,
    ) -> Result<(), TensorFileError> {
        match info.dtype {
            Dtype::F32 => self.read_raw(info, start, bytemuck::cast_slice_mut(out)),
            Dtype::F16 | Dtype::Bf16 => {
                scratch.resize(out.len(), 0);
                self.read_raw(info, start, bytemuck::cast_slice_mut(scratch))?;
                widen(info.dtype, scratch, out);
                Ok(())
            }
            other => Err(TensorFileError::Entry {
                path: self.path.clone(),
                tensor: info.name.clone(),
                message: format!("{other} is not a float type"),
            }),
        }
    }

    fn range_error(&self, info: &TensorInfo, start: usize, end: usize) -> TensorFileError {
        TensorFileError::Range {
            path: self.path.clone(),
            tensor: info.name.clone(),
            start,
            end,
            len: info.numel(),
        }
    }
}

/// Converts 16-bit floats (as raw bits) of `dtype` to f32.
pub(crate) fn widen(dtype: Dtype, bits: &[u16], out: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    match dtype {
        Dtype::F16 => bytemuck::cast_slice::<u16, f16>(bits).convert_to_f32_slice(out),
        _ => bytemuck::cast_slice::<u16, bf16>(bits).convert_to_f32_slice(out),
    }
}
