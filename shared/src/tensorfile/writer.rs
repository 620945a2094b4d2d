//! Streamed safetensors writing: the header first, then tensor bytes at known offsets, from any thread.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use super::{Dtype, TensorFileError, TensorInfo};

/// A tensor to be written: name, element type and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
}

/// A safetensors file being written beside its final path; it appears there only on [`finish`].
///
/// [`finish`]: TensorFileWriter::finish
#[derive(Debug)]
pub struct TensorFileWriter {
    path: PathBuf,
    temp: PathBuf,
    file: File,
    tensors: Vec<TensorInfo>,
    finished: bool,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TensorFileWriter {
    /// Creates the file with its header for `specs` (data in the order given) and `metadata`.
    pub fn create(
        path: impl AsRef<Path>,
        specs: &[TensorSpec],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, TensorFileError> {
        let path = path.as_ref().to_path_buf();
        let temp = temp_path(&path);
        let (json, tensors) = layout(specs, metadata);
        let file = File::create(&temp).map_err(|e| TensorFileError::io(&temp, e))?;
        let mut writer = Self {
            path,
            temp,
            file,
            tensors,
            finished: false,
        };
        let total = writer.write_header(&json)?;
        writer
            .file
            .set_len(total)
            .map_err(|e| TensorFileError::io(&writer.temp, e))?;
        Ok(writer)
    }

    fn write_header(&mut self, json: &[u8]) -> Result<u64, TensorFileError> {
        let mut head = Vec::with_capacity(8 + json.len());
        head.extend_from_slice(&(json.len() as u64).to_le_bytes());
        head.extend_from_slice(json);
        self.file
            .write_all(&head)
            .map_err(|e| TensorFileError::io(&self.temp, e))?;
        let data: u64 = self.tensors.iter().map(|t| t.nbytes).sum();
        Ok(head.len() as u64 + data)
    }

    /// The tensors being written, in file order, with their offsets.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Writes `bytes` as elements starting at element `start` of tensor number `index`.
    pub fn write_at(
        &self,
        index: usize,
        start: usize,
        bytes: &[u8],
    ) -> Result<(), TensorFileError> {
        let info = &self.tensors[index];
        let size = info.dtype.size();
        let end = start + bytes.len() / size;
        if !bytes.len().is_multiple_of(size) || end > info.numel() {
            return Err(TensorFileError::Range {
                path: self.temp.clone(),
                tensor: info.name.clone(),
                start,
                end,
                len: info.numel(),
            });
        }
        self.file
            .write_all_at(bytes, info.offset + (start * size) as u64)
            .map_err(|e| TensorFileError::io(&self.temp, e))
    }

    /// Flushes the file to disk and renames it to its final path.
    pub fn finish(self) -> Result<PathBuf, TensorFileError> {
        self.finish_with(true)
    }

    /// Renames the file to its final path, after flushing it to disk when `sync` (without it, the
    /// file is complete for readers but may not survive a power loss: for results that are uploaded
    /// elsewhere or rebuilt on restart).
    pub fn finish_with(mut self, sync: bool) -> Result<PathBuf, TensorFileError> {
        if sync {
            self.file
                .sync_all()
                .map_err(|e| TensorFileError::io(&self.temp, e))?;
        }
        fs::rename(&self.temp, &self.path).map_err(|e| TensorFileError::io(&self.path, e))?;
        self.finished = true;
        Ok(self.path.clone())
    }
}

impl Drop for TensorFileWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// The header JSON (padded with spaces to a multiple of 8 bytes, as `safetensors` does) and the
/// tensors' absolute offsets.
fn layout(specs: &[TensorSpec], metadata: &BTreeMap<String, String>) -> (Vec<u8>, Vec<TensorInfo>) {
    let mut entries = serde_json::Map::new();
    if !metadata.is_empty() {
        entries.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut relative = Vec::with_capacity(specs.len());
    let mut cursor = 0u64;
    for spec in specs {
        let nbytes = spec.shape.iter().product::<usize>() as u64 * spec.dtype.size() as u64;
        entries.insert(
            spec.name.clone(),
            serde_json::json!({
                "dtype": spec.dtype.as_str(),
                "shape": spec.shape,
                "data_offsets": [cursor, cursor + nbytes],
            }),
        );
        relative.push((cursor, nbytes));
        cursor += nbytes;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(entries))
        .expect("a map of strings and numbers serialises");
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(b' ');
    }
    let data_start = 8 + json.len() as u64;
    let tensors = specs
        .iter()
        .zip(relative)
        .map(|(spec, (begin, nbytes))| TensorInfo {
            name: spec.name.clone(),
            dtype: spec.dtype,
            shape: spec.shape.clone(),
            offset: data_start + begin,
            nbytes,
        })
        .collect();
    (json, tensors)
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.partial-{}-{n}", std::process::id()))
}
