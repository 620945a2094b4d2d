//! Checking a diff as its bytes arrive, in file order, without keeping them: the header against the
//! manifest (as [`DiffReader::open`](super::DiffReader::open) does), then every value (finite,
//! sparse indices ascending and in range) and the norm. Its state is small and serialisable, so a
//! coordinator can stream an upload to the object store part by part, check it in the same pass, and
//! resume after a restart without reading the stored parts again.

use std::path::Path;

use half::{bf16, f16};

use super::{
    check_announced,
    reader::{expected_part, header_limit, layout, Layout},
    BaseInfo, DiffError, DiffManifest, DiffStats,
};
use crate::tensorfile::{Dtype, Header, TensorFileError, MAX_HEADER_BYTES};

/// Values per partial sum of squares (the same chunks as [`DiffReader::scan`](super::DiffReader::scan)
/// for dense tensors, so both measure the same norm).
const CHUNK_VALUES: u64 = 1 << 20;

/// How the file stands for errors (the coordinator's own paths never reach a contributor).
const NAME: &str = "diff.safetensors";

/// What one stored part must hold.
#[derive(Debug, Clone)]
enum Check {
    /// Float values (F32/BF16/F16, or I8 times the scale): finite, counted in the norm.
    Values { dtype: Dtype, scale: f32 },
    /// Top-k indices: strictly ascending, below `numel`.
    Indices { numel: usize },
}

/// One stored part, in file order.
#[derive(Debug, Clone)]
struct Part {
    /// The diffed tensor it belongs to (for errors).
    tensor: String,
    start: u64,
    end: u64,
    dtype: Dtype,
    check: Check,
}

/// Where a stream check stands after the bytes fed so far.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Bytes fed.
    offset: u64,
    /// Index of the part being read (once the header is parsed).
    part: usize,
    /// Bytes of a value split between two feeds (fewer than its size).
    carry: Vec<u8>,
    /// The last top-k index of the part being read.
    prev_index: Option<u32>,
    /// Values in the current partial sum.
    chunk_values: u64,
    /// The current partial sum of squares.
    chunk_sq: f64,
    /// Completed partial sums, added up.
    sum_sq: f64,
    /// Largest absolute value so far.
    max_abs: f32,
}

/// A saved [`StreamCheck`]: the header bytes (so the layout is parsed again, not trusted) and the
/// progress.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StreamState {
    /// The length prefix and header bytes received, hex.
    head: String,
    /// Progress through the data.
    progress: Progress,
}

/// A diff checked while its bytes arrive.
#[derive(Debug, Clone)]
pub struct StreamCheck {
    manifest: DiffManifest,
    limit: u64,
    /// The length prefix and the header JSON, as far as received.
    head: Vec<u8>,
    /// The stored parts in file order, once the header is complete.
    parts: Option<Vec<Part>>,
    progress: Progress,
}

impl StreamCheck {
    /// Starts checking a diff of `manifest` against `base` (the manifest is checked first).
    pub fn new(manifest: DiffManifest, base: &BaseInfo) -> Result<Self, DiffError> {
        check_announced(&manifest, base)?;
        Ok(Self {
            limit: header_limit(&manifest).min(MAX_HEADER_BYTES),
            manifest,
            head: Vec::new(),
            parts: None,
            progress: Progress::default(),
        })
    }

    /// Restores a check saved with [`StreamCheck::save`] for the same manifest and base.
    pub fn restore(
        manifest: DiffManifest,
        base: &BaseInfo,
        state: &StreamState,
    ) -> Result<Self, DiffError> {
        let mut check = Self::new(manifest, base)?;
        let head = hex::decode(&state.head)
            .map_err(|e| DiffError::Manifest(format!("saved upload state: {e}")))?;
        check.feed(&head)?;
        if check.head.len() as u64 > state.progress.offset {
            return Err(DiffError::Manifest(
                "saved upload state: progress before its header".into(),
            ));
        }
        check.progress = state.progress.clone();
        Ok(check)
    }

    /// The state to save (small: the header and a few counters).
    pub fn save(&self) -> StreamState {
        StreamState {
            head: hex::encode(&self.head),
            progress: self.progress.clone(),
        }
    }

    /// Bytes fed so far.
    pub fn offset(&self) -> u64 {
        self.progress.offset
    }

    /// Checks the next bytes of the file.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), DiffError> {
        let total = self.manifest.diff_bytes;
        if self.progress.offset + data.len() as u64 > total {
            return Err(DiffError::Integrity {
                what: "size",
                expected: total.to_string(),
                actual: format!("more than {}", self.progress.offset + data.len() as u64 - 1),
            });
        }
        while self.parts.is_none() && !data.is_empty() {
            let take = self.head_needed().min(data.len());
            self.head.extend_from_slice(&data[..take]);
            self.progress.offset += take as u64;
            data = &data[take..];
            self.parse_head()?;
        }
        while !data.is_empty() {
            // The parts tile the data section, so bytes within the file always fall in one.
            let parts = self.parts.as_ref().expect("header parsed");
            let part = parts[self.progress.part].clone();
            let n = ((part.end - self.progress.offset) as usize).min(data.len());
            self.values(&part, &data[..n])?;
            self.progress.offset += n as u64;
            data = &data[n..];
            self.skip_finished_parts();
        }
        Ok(())
    }

    /// Ends the check once every byte was fed: the diff's stats.
    pub fn finish(self) -> Result<DiffStats, DiffError> {
        if self.progress.offset != self.manifest.diff_bytes || self.parts.is_none() {
            return Err(DiffError::Integrity {
                what: "size",
                expected: self.manifest.diff_bytes.to_string(),
                actual: self.progress.offset.to_string(),
            });
        }
        Ok(DiffStats {
            l2_norm: self.progress.sum_sq.sqrt(),
            max_abs: self.progress.max_abs,
        })
    }

    /// Header bytes still to come before the layout can be parsed.
    fn head_needed(&self) -> usize {
        match self.head.get(..8) {
            None => 8 - self.head.len(),
            Some(prefix) => {
                let len = u64::from_le_bytes(prefix.try_into().expect("8 bytes"));
                (8 + len - self.head.len() as u64) as usize
            }
        }
    }

    /// Checks the length prefix once complete, and parses the header once complete.
    fn parse_head(&mut self) -> Result<(), DiffError> {
        let path = Path::new(NAME);
        let total = self.manifest.diff_bytes;
        if self.head.len() == 8 {
            let len = u64::from_le_bytes(self.head[..8].try_into().expect("8 bytes"));
            if len > self.limit {
                return Err(TensorFileError::HeaderTooLarge {
                    path: path.into(),
                    len,
                    limit: self.limit,
                }
                .into());
            }
            if 8 + len > total {
                return Err(TensorFileError::Truncated {
                    path: path.into(),
                    len: total,
                    needed: 8 + len,
                }
                .into());
            }
        }
        if self.head.len() < 8 || self.head_needed() > 0 {
            return Ok(());
        }
        let header = Header::parse(path, &self.head[8..], total)?;
        let mut tensors = Vec::with_capacity(self.manifest.tensors.len());
        for entry in &self.manifest.tensors {
            tensors.push(layout(&header, entry, self.manifest.encoding)?);
        }
        if let Some(extra) = header.names().find(|n| !expected_part(&self.manifest, n)) {
            return Err(DiffError::Layout {
                name: extra.to_string(),
                message: "in the file but not in the manifest".into(),
            });
        }
        let mut parts: Vec<Part> = tensors
            .iter()
            .flat_map(|t| match &t.layout {
                Layout::Dense { part, scale } => vec![(
                    t,
                    part,
                    Check::Values {
                        dtype: part.dtype,
                        scale: *scale,
                    },
                )],
                Layout::Sparse { indices, values } => vec![
                    (t, indices, Check::Indices { numel: t.numel }),
                    (
                        t,
                        values,
                        Check::Values {
                            dtype: values.dtype,
                            scale: 1.0,
                        },
                    ),
                ],
            })
            .map(|(t, info, check)| Part {
                tensor: t.name.clone(),
                start: info.offset,
                end: info.offset + info.nbytes,
                dtype: info.dtype,
                check,
            })
            .collect();
        // The header tiles the data section (checked by `Header::parse`): in offset order the parts
        // follow each other from the data start to the end of the file.
        parts.sort_by_key(|p| (p.start, p.end));
        self.parts = Some(parts);
        self.skip_finished_parts();
        Ok(())
    }

    /// Moves past the parts that end where the data read so far ends (empty ones included).
    fn skip_finished_parts(&mut self) {
        let Some(parts) = &self.parts else { return };
        while let Some(part) = parts.get(self.progress.part) {
            if part.end > self.progress.offset {
                break;
            }
            let p = &mut self.progress;
            p.sum_sq += p.chunk_sq;
            p.chunk_sq = 0.0;
            p.chunk_values = 0;
            p.prev_index = None;
            p.part += 1;
        }
    }

    /// Checks `data`, the next bytes of `part`.
    fn values(&mut self, part: &Part, mut data: &[u8]) -> Result<(), DiffError> {
        let size = part.dtype.size();
        let mut first = (self.progress.offset - part.start) as usize;
        if !self.progress.carry.is_empty() {
            let take = (size - self.progress.carry.len()).min(data.len());
            let mut carry = std::mem::take(&mut self.progress.carry);
            carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            first += take;
            if carry.len() < size {
                self.progress.carry = carry;
                return Ok(());
            }
            self.elements(part, &carry, (first - size) / size)?;
        }
        let whole = data.len() / size * size;
        self.elements(part, &data[..whole], first / size)?;
        self.progress.carry = data[whole..].to_vec();
        Ok(())
    }

    /// Checks whole values `bytes` of `part`, the first being element `index`.
    fn elements(&mut self, part: &Part, bytes: &[u8], index: usize) -> Result<(), DiffError> {
        match part.check {
            Check::Indices { numel } => {
                for (k, b) in bytes.chunks_exact(4).enumerate() {
                    let value = u32::from_le_bytes(b.try_into().expect("4 bytes"));
                    let p = &mut self.progress;
                    if value as usize >= numel || p.prev_index.is_some_and(|q| value <= q) {
                        return Err(DiffError::BadIndex {
                            name: part.tensor.clone(),
                            position: index + k,
                            value,
                        });
                    }
                    p.prev_index = Some(value);
                }
                Ok(())
            }
            Check::Values { dtype, scale } => match dtype {
                Dtype::F32 => self.floats(part, bytes, 4, index, |b| {
                    f32::from_le_bytes(b.try_into().expect("4 bytes"))
                }),
                Dtype::Bf16 => self.floats(part, bytes, 2, index, |b| {
                    bf16::from_le_bytes([b[0], b[1]]).to_f32()
                }),
                Dtype::F16 => self.floats(part, bytes, 2, index, |b| {
                    f16::from_le_bytes([b[0], b[1]]).to_f32()
                }),
                Dtype::I8 => self.floats(part, bytes, 1, index, |b| b[0] as i8 as f32 * scale),
                other => Err(DiffError::Layout {
                    name: part.tensor.clone(),
                    message: format!("{other} values"),
                }),
            },
        }
    }

    /// Decodes values of `size` bytes with `decode`: each must be finite; squares are summed in
    /// f64, [`CHUNK_VALUES`] at a time.
    fn floats(
        &mut self,
        part: &Part,
        bytes: &[u8],
        size: usize,
        index: usize,
        decode: impl Fn(&[u8]) -> f32,
    ) -> Result<(), DiffError> {
        let p = &mut self.progress;
        for (k, b) in bytes.chunks_exact(size).enumerate() {
            let v = decode(b);
            if !v.is_finite() {
                return Err(DiffError::NonFinite {
                    name: part.tensor.clone(),
                    index: index + k,
                    value: v,
                });
            }
            p.chunk_sq += (v as f64) * (v as f64);
            p.max_abs = p.max_abs.max(v.abs());
            p.chunk_values += 1;
            if p.chunk_values == CHUNK_VALUES {
                p.sum_sq += p.chunk_sq;
                p.chunk_sq = 0.0;
                p.chunk_values = 0;
            }
        }
        Ok(())
    }
}
