//! Opening a diff against its base: structural checks up front, values decoded on demand.

use std::{path::Path, sync::Arc};

use super::{
    codec::{INDICES_SUFFIX, VALUES_SUFFIX},
    stream::StreamCheck,
    BaseInfo, DiffError, DiffManifest, Encoding, TensorEntry,
};
use crate::{
    hash::ResumableSha256,
    tensorfile::{ByteSource, Dtype, Header, LocalFile, TensorFile, TensorInfo},
};

/// Where one diffed tensor's values are stored in the file.
#[derive(Debug, Clone)]
pub(super) enum Layout {
    /// Every value, as F32/BF16/F16, or I8 times `scale`.
    Dense { part: TensorInfo, scale: f32 },
    /// Ascending u32 indices and bf16 values of the kept entries.
    Sparse {
        indices: TensorInfo,
        values: TensorInfo,
    },
}

/// One diffed tensor of an open diff.
#[derive(Debug, Clone)]
pub struct DiffTensor {
    /// Name in the base's weights file.
    pub name: String,
    /// Number of elements.
    pub numel: usize,
    pub(super) layout: Layout,
}

/// Reusable buffers for decoding.
#[derive(Debug, Default)]
pub struct Scratch {
    halves: Vec<u16>,
    bytes: Vec<u8>,
    /// Per reader (by [`DiffReader`] id): the index part (offset, bytes) last decoded and its
    /// indices, so decoding a sparse tensor chunk by chunk reads its indices once, not once per chunk.
    indices: std::collections::HashMap<u64, ((u64, u64), Vec<u32>)>,
    values: Vec<f32>,
}

/// Ids that tell open readers apart (an address could be reused by a later reader).
static NEXT_READER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What a full read of a diff found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiffStats {
    /// Global L2 norm of the decoded diff.
    pub l2_norm: f64,
    /// Largest absolute decoded value.
    pub max_abs: f32,
}

/// A diff whose manifest, base and file layout agree; values are read on demand.
#[derive(Debug)]
pub struct DiffReader {
    /// The manifest.
    pub manifest: DiffManifest,
    /// Extra factor applied to this contribution when fused (asynchronous staleness); 1 by default.
    pub scale: f32,
    id: u64,
    file: TensorFile,
    tensors: Vec<DiffTensor>,
}

/// Opens the diff at `path`, checks everything, reads every value once, and returns it with its stats.
/// This is the check a coordinator runs on an upload ([`StreamCheck`]), on a local file; a wrong
/// hash is reported before any wrong value.
pub fn validate(
    path: &Path,
    manifest: DiffManifest,
    base: &BaseInfo,
) -> Result<(DiffReader, DiffStats), DiffError> {
    use std::io::Read;
    let reader = DiffReader::open(path, manifest.clone(), base)?;
    let mut check = StreamCheck::new(manifest, base)?;
    let mut hasher = ResumableSha256::default();
    let mut file = std::fs::File::open(path).map_err(|e| DiffError::io(path, e))?;
    let mut buf = vec![0u8; 4 << 20];
    let mut failed = None;
    loop {
        let n = file.read(&mut buf).map_err(|e| DiffError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if failed.is_none() {
            failed = check.feed(&buf[..n]).err();
        }
    }
    let actual = hasher.finalize_hex();
    if actual != reader.manifest.diff_sha256 {
        return Err(DiffError::Integrity {
            what: "sha256",
            expected: reader.manifest.diff_sha256,
            actual,
        });
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok((reader, check.finish()?))
}

impl DiffReader {
    /// Opens the diff at `path` and checks the manifest against `base` and the file's layout
    /// (no values are read; see [`validate`] for the full check).
    pub fn open(path: &Path, manifest: DiffManifest, base: &BaseInfo) -> Result<Self, DiffError> {
        let file = LocalFile::open(path).map_err(|e| DiffError::io(path, e))?;
        Self::open_source(path, Arc::new(file), manifest, base)
    }

    /// As [`DiffReader::open`], reading the diff from `source` (`name` stands for it in errors).
    pub fn open_source(
        name: &Path,
        source: Arc<dyn ByteSource>,
        manifest: DiffManifest,
        base: &BaseInfo,
    ) -> Result<Self, DiffError> {
        check_announced(&manifest, base)?;
        let len = source.len();
        if len != manifest.diff_bytes {
            return Err(DiffError::Integrity {
                what: "size",
                expected: manifest.diff_bytes.to_string(),
                actual: len.to_string(),
            });
        }
        let file = TensorFile::open_source(name, source, header_limit(&manifest))?;
        let mut tensors = Vec::with_capacity(manifest.tensors.len());
        for entry in &manifest.tensors {
            tensors.push(layout(&file.header, entry, manifest.encoding)?);
        }
        if let Some(extra) = file.header.names().find(|n| !expected_part(&manifest, n)) {
            return Err(DiffError::Layout {
                name: extra.to_string(),
                message: "in the file but not in the manifest".into(),
            });
        }
        Ok(Self {
            manifest,
            scale: 1.0,
            id: NEXT_READER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            file,
            tensors,
        })
    }

    /// The diffed tensors, in manifest order.
    pub fn tensors(&self) -> &[DiffTensor] {
        &self.tensors
    }

    /// The diffed tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&DiffTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The diff file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Decodes elements `start..start + out.len()` of `tensor` into `out`, multiplied by `factor`.
    pub fn decode(
        &self,
        tensor: &DiffTensor,
        start: usize,
        out: &mut [f32],
        factor: f32,
        scratch: &mut Scratch,
    ) -> Result<(), DiffError> {
        match &tensor.layout {
            Layout::Dense { part, scale } => {
                if part.dtype == Dtype::I8 {
                    scratch.bytes.resize(out.len(), 0);
                    self.file.read_raw(part, start, &mut scratch.bytes)?;
                    let s = scale * factor;
                    for (o, &q) in out.iter_mut().zip(&scratch.bytes) {
                        *o = q as i8 as f32 * s;
                    }
                    return Ok(());
                }
                self.file.read_f32(part, start, out, &mut scratch.halves)?;
                if factor != 1.0 {
                    out.iter_mut().for_each(|v| *v *= factor);
                }
            }
            Layout::Sparse { indices, values } => {
                // Keyed by the part's offset *and* size: an empty part may share its offset with
                // another tensor's indices, and must not be taken for them.
                let part = (indices.offset, indices.nbytes);
                let (cached, idx) = scratch
                    .indices
                    .entry(self.id)
                    .or_insert_with(|| ((u64::MAX, 0), Vec::new()));
                if *cached != part {
                    *cached = (u64::MAX, 0);
                    self.read_indices(indices, idx)?;
                    *cached = part;
                }
                let idx = &scratch.indices[&self.id].1;
                let end = (start + out.len()) as u32;
                let lo = idx.partition_point(|&i| i < start as u32);
                let hi = idx.partition_point(|&i| i < end);
                scratch.values.resize(hi - lo, 0.0);
                self.file
                    .read_f32(values, lo, &mut scratch.values, &mut scratch.halves)?;
                out.fill(0.0);
                for (k, (&i, &v)) in idx[lo..hi].iter().zip(&scratch.values).enumerate() {
                    let slot = (i as usize)
                        .checked_sub(start)
                        .and_then(|j| out.get_mut(j))
                        .ok_or_else(|| DiffError::BadIndex {
                            name: tensor.name.clone(),
                            position: lo + k,
                            value: i,
                        })?;
                    *slot = v * factor;
                }
            }
        }
        Ok(())
    }

    fn read_indices(&self, info: &TensorInfo, out: &mut Vec<u32>) -> Result<(), DiffError> {
        out.resize(info.numel(), 0);
        self.file
            .read_raw(info, 0, bytemuck::cast_slice_mut(out))
            .map_err(DiffError::from)
    }

    /// Reads every value: rejects NaN/Inf and malformed sparse indices, and measures the norm.
    pub fn scan(&self) -> Result<DiffStats, DiffError> {
        const CHUNK: usize = 1 << 20;
        let mut scratch = Scratch::default();
        let mut buf = vec![0f32; CHUNK];
        let mut sum_sq = 0f64;
        let mut max_abs = 0f32;
        for tensor in &self.tensors {
            if let Layout::Sparse { indices, .. } = &tensor.layout {
                let mut idx = Vec::new();
                self.read_indices(indices, &mut idx)?;
                check_indices(&tensor.name, &idx, tensor.numel)?;
            }
            let mut start = 0;
            while start < tensor.numel {
                let n = CHUNK.min(tensor.numel - start);
                let out = &mut buf[..n];
                self.decode(tensor, start, out, 1.0, &mut scratch)?;
                let mut chunk_sq = 0f64;
                for (j, &v) in out.iter().enumerate() {
                    if !v.is_finite() {
                        return Err(DiffError::NonFinite {
                            name: tensor.name.clone(),
                            index: start + j,
                            value: v,
                        });
                    }
                    chunk_sq += (v as f64) * (v as f64);
                    max_abs = max_abs.max(v.abs());
                }
                sum_sq += chunk_sq;
                start += n;
            }
        }
        Ok(DiffStats {
            l2_norm: sum_sq.sqrt(),
            max_abs,
        })
    }
}

/// The largest header a diff of this manifest can need: per stored part (two for top-k) its name
/// (suffix included), dtype, shape and offsets, plus room for `__metadata__`.
pub(super) fn header_limit(m: &DiffManifest) -> u64 {
    let parts: u64 = m
        .tensors
        .iter()
        .map(|t| 2 * (t.name.len() as u64 + 64 + 24 * t.shape.len() as u64 + 64))
        .sum();
    64 * 1024 + parts
}

/// Checks a manifest against the base it names, before any byte of the diff exists: its fields, the
/// base hash and architecture, and every listed tensor (in the base, once, not a head, a float weight
/// of the same shape and dtype). Answers the largest diff file such a manifest can describe (its
/// header limit plus every part at its encoding's size), so an upload can be bounded by it.
pub fn check_announced(m: &DiffManifest, base: &BaseInfo) -> Result<u64, DiffError> {
    check_manifest(m, base)?;
    if m.tensors.len() > base.file.header.tensors.len() {
        return Err(DiffError::Manifest(format!(
            "{} tensors listed; the base has {}",
            m.tensors.len(),
            base.file.header.tensors.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut data = 0u64;
    for entry in &m.tensors {
        if !seen.insert(entry.name.as_str()) {
            return Err(DiffError::Layout {
                name: entry.name.clone(),
                message: "listed twice in the manifest".into(),
            });
        }
        check_against_base(entry, base)?;
        let numel = entry.shape.iter().product::<usize>() as u64;
        data += numel
            * match m.encoding {
                Encoding::F32 => 4,
                Encoding::Bf16 | Encoding::F16 => 2,
                Encoding::Int8 => 1,
                // A u32 index and a bf16 value per kept element, at most every element.
                Encoding::TopK { .. } => 6,
            };
    }
    Ok(8 + header_limit(m) + data)
}

fn check_manifest(m: &DiffManifest, base: &BaseInfo) -> Result<(), DiffError> {
    m.check_fields()?;
    if m.base.sha256 != base.sha256 {
        return Err(DiffError::WrongBase {
            expected: base.sha256.clone(),
            found: m.base.sha256.clone(),
        });
    }
    if m.architecture != base.architecture.name {
        return Err(DiffError::WrongArchitecture {
            expected: base.architecture.name.to_string(),
            found: m.architecture.clone(),
        });
    }
    Ok(())
}

fn check_against_base(entry: &TensorEntry, base: &BaseInfo) -> Result<(), DiffError> {
    let info = base
        .tensor(&entry.name)
        .ok_or_else(|| DiffError::UnknownTensor(entry.name.clone()))?;
    if base.is_head(&entry.name) {
        return Err(DiffError::HeadTensor(entry.name.clone()));
    }
    if !info.dtype.is_weight_float() {
        return Err(DiffError::NotFloat {
            name: entry.name.clone(),
            dtype: info.dtype,
        });
    }
    if info.shape != entry.shape {
        return Err(DiffError::ShapeMismatch {
            name: entry.name.clone(),
            expected: info.shape.clone(),
            found: entry.shape.clone(),
        });
    }
    if info.dtype != entry.dtype {
        return Err(DiffError::Layout {
            name: entry.name.clone(),
            message: format!(
                "manifest says base dtype {}, the base has {}",
                entry.dtype, info.dtype
            ),
        });
    }
    Ok(())
}

pub(super) fn expected_part(m: &DiffManifest, file_name: &str) -> bool {
    match m.encoding {
        Encoding::TopK { .. } => [INDICES_SUFFIX, VALUES_SUFFIX].iter().any(|s| {
            file_name
                .strip_suffix(s)
                .is_some_and(|n| m.tensor(n).is_some())
        }),
        _ => m.tensor(file_name).is_some(),
    }
}

/// Finds `entry`'s parts in the file and checks their dtypes and shapes against the encoding.
pub(super) fn layout(
    header: &Header,
    entry: &TensorEntry,
    encoding: Encoding,
) -> Result<DiffTensor, DiffError> {
    let numel: usize = entry.shape.iter().product();
    let part = |suffix: &str, dtype: Dtype, shape: &[usize]| -> Result<TensorInfo, DiffError> {
        let name = format!("{}{suffix}", entry.name);
        let info = header.get(&name).ok_or_else(|| DiffError::Layout {
            name: name.clone(),
            message: "in the manifest but not in the file".into(),
        })?;
        if info.dtype != dtype || info.shape != shape {
            return Err(DiffError::Layout {
                name,
                message: format!(
                    "stored as {} {:?}, encoding `{encoding}` needs {dtype} {shape:?}",
                    info.dtype, info.shape
                ),
            });
        }
        Ok(info.clone())
    };
    let dense = |dtype: Dtype, scale: f32| -> Result<Layout, DiffError> {
        Ok(Layout::Dense {
            part: part("", dtype, &entry.shape)?,
            scale,
        })
    };
    let layout = match encoding {
        Encoding::F32 => dense(Dtype::F32, 1.0)?,
        Encoding::Bf16 => dense(Dtype::Bf16, 1.0)?,
        Encoding::F16 => dense(Dtype::F16, 1.0)?,
        Encoding::Int8 => {
            let scale = entry
                .scale
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| DiffError::Layout {
                    name: entry.name.clone(),
                    message: format!(
                        "int8 needs a finite non-negative scale, got {:?}",
                        entry.scale
                    ),
                })?;
            dense(Dtype::I8, scale)?
        }
        Encoding::TopK { .. } => {
            let kept = entry
                .kept
                .filter(|&k| k <= numel)
                .ok_or_else(|| DiffError::Layout {
                    name: entry.name.clone(),
                    message: format!("top-k needs `kept` ≤ {numel}, got {:?}", entry.kept),
                })?;
            Layout::Sparse {
                indices: part(INDICES_SUFFIX, Dtype::U32, &[kept])?,
                values: part(VALUES_SUFFIX, Dtype::Bf16, &[kept])?,
            }
        }
    };
    Ok(DiffTensor {
        name: entry.name.clone(),
        numel,
        layout,
    })
}

fn check_indices(name: &str, idx: &[u32], numel: usize) -> Result<(), DiffError> {
    let mut prev: Option<u32> = None;
    for (position, &value) in idx.iter().enumerate() {
        if value as usize >= numel || prev.is_some_and(|p| value <= p) {
            return Err(DiffError::BadIndex {
                name: name.to_string(),
                position,
                value,
            });
        }
        prev = Some(value);
    }
    Ok(())
}
