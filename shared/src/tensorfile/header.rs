//! The safetensors header: an 8-byte little-endian length, then a JSON object of tensor entries.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use super::{Dtype, TensorFileError, TensorSpec};

/// Headers larger than this are refused (the limit the `safetensors` crate uses too).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// Where one tensor's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Absolute file offset of the first byte.
    pub offset: u64,
    /// Number of bytes (elements × dtype size).
    pub nbytes: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed and checked header.
#[derive(Debug, Clone)]
pub struct Header {
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// `__metadata__` string map.
    pub metadata: BTreeMap<String, String>,
    /// File offset where the data section starts.
    pub data_start: u64,
    index: HashMap<String, usize>,
}

impl Header {
    /// Parses `json` (the header bytes after the length prefix) of a file of `file_len` bytes and checks
    /// that its tensors tile the data section exactly.
    pub fn parse(path: &Path, json: &[u8], file_len: u64) -> Result<Self, TensorFileError> {
        let header_err = |message: String| TensorFileError::Header {
            path: path.to_path_buf(),
            message,
        };
        // Typed, entry by entry: no generic JSON tree of an untrusted header in memory.
        let raw: RawHeader = serde_json::from_slice(json).map_err(|e| header_err(e.to_string()))?;
        let data_start = 8 + json.len() as u64;
        let data_len = file_len - data_start;
        let metadata = raw.metadata;
        let mut tensors = Vec::with_capacity(raw.entries.len());
        for (name, entry) in &raw.entries {
            let info = parse_entry(name, entry, data_start, data_len).map_err(|message| {
                TensorFileError::Entry {
                    path: path.to_path_buf(),
                    tensor: name.clone(),
                    message,
                }
            })?;
            tensors.push(info);
        }
        tensors.sort_by_key(|t| (t.offset, t.nbytes));
        check_tiling(&tensors, data_start, data_len).map_err(|message| {
            TensorFileError::Layout {
                path: path.to_path_buf(),
                data_len,
                message,
            }
        })?;
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            tensors,
            metadata,
            data_start,
            index,
        })
    }

    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensors' names, dtypes and shapes in file order (to write a file with the same layout).
    pub fn specs(&self) -> Vec<TensorSpec> {
        self.tensors
            .iter()
            .map(|t| TensorSpec {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
            })
            .collect()
    }

    /// Tensor names in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|t| t.name.as_str())
    }
}

/// One tensor entry as a safetensors header writes it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// A header object: its tensor entries in file order and `__metadata__`.
struct RawHeader {
    entries: Vec<(String, RawEntry)>,
    metadata: BTreeMap<String, String>,
}

impl<'de> serde::Deserialize<'de> for RawHeader {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = RawHeader;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawHeader, A::Error> {
                use serde::de::Error;
                let mut out = RawHeader {
                    entries: Vec::new(),
                    metadata: BTreeMap::new(),
                };
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(A::Error::custom(format!("`{key}` is listed twice")));
                    }
                    if key == "__metadata__" {
                        out.metadata = map.next_value()?;
                    } else {
                        let entry = map.next_value()?;
                        out.entries.push((key, entry));
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(Entries)
    }
}

fn parse_entry(
    name: &str,
    entry: &RawEntry,
    data_start: u64,
    data_len: u64,
) -> Result<TensorInfo, String> {
    let dtype =
        Dtype::parse(&entry.dtype).ok_or_else(|| format!("unknown dtype `{}`", entry.dtype))?;
    let shape = entry
        .shape
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<usize>>>()
        .ok_or("`shape` holds a dimension too large for this machine")?;
    let [begin, end] = entry.data_offsets;
    if begin > end || end > data_len {
        return Err(format!(
            "data_offsets [{begin}, {end}] outside the {data_len}-byte data section"
        ));
    }
    let nbytes = shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or("shape overflows")?;
    if nbytes != end - begin {
        return Err(format!(
            "{dtype} {shape:?} needs {nbytes} bytes but data_offsets span {}",
            end - begin
        ));
    }
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        shape,
        offset: data_start + begin,
        nbytes,
    })
}

fn check_tiling(tensors: &[TensorInfo], data_start: u64, data_len: u64) -> Result<(), String> {
    let mut cursor = data_start;
    for t in tensors {
        if t.offset < cursor {
            return Err(format!("`{}` overlaps the tensor before it", t.name));
        }
        if t.offset > cursor {
            return Err(format!(
                "{} unused bytes before `{}`",
                t.offset - cursor,
                t.name
            ));
        }
        cursor += t.nbytes;
    }
    let end = data_start + data_len;
    if cursor != end {
        return Err(format!("{} bytes after the last tensor", end - cursor));
    }
    Ok(())
}
