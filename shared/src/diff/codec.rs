//! Encoding one tensor's diff values into the stored parts of an [`Encoding`].

use half::{bf16, f16};

use super::Encoding;
use crate::tensorfile::Dtype;

/// Name suffix of the index part of a top-k tensor.
pub const INDICES_SUFFIX: &str = "::indices";
/// Name suffix of the value part of a top-k tensor.
pub const VALUES_SUFFIX: &str = "::values";

/// One stored part of an encoded tensor.
#[derive(Debug, Clone)]
pub struct Part {
    /// Appended to the tensor's name (empty for dense encodings).
    pub suffix: &'static str,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (the tensor's shape when dense, `[k]` for top-k parts).
    pub shape: Vec<usize>,
    /// Little-endian bytes.
    pub bytes: Vec<u8>,
}

/// A tensor's diff, encoded.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Stored parts.
    pub parts: Vec<Part>,
    /// Per-tensor scale (int8 only).
    pub scale: Option<f32>,
    /// Number of values kept (top-k only).
    pub kept: Option<usize>,
}

/// Encodes `values` (a tensor of `shape`, flattened) with `encoding`.
pub fn encode(values: &[f32], shape: &[usize], encoding: Encoding) -> Encoded {
    let dense = |dtype, bytes| Encoded {
        parts: vec![Part {
            suffix: "",
            dtype,
            shape: shape.to_vec(),
            bytes,
        }],
        scale: None,
        kept: None,
    };
    match encoding {
        Encoding::F32 => dense(Dtype::F32, bytemuck::cast_slice(values).to_vec()),
        Encoding::Bf16 => dense(Dtype::Bf16, narrow(values, bf16::from_f32)),
        Encoding::F16 => dense(Dtype::F16, narrow(values, f16::from_f32)),
        Encoding::Int8 => {
            let (scale, q) = quantize_int8(values);
            let mut encoded = dense(Dtype::I8, q);
            encoded.scale = Some(scale);
            encoded
        }
        Encoding::TopK { density } => top_k(values, density),
    }
}

fn narrow<T: bytemuck::Pod>(values: &[f32], f: fn(f32) -> T) -> Vec<u8> {
    let narrow: Vec<T> = values.iter().map(|&v| f(v)).collect();
    bytemuck::cast_slice(&narrow).to_vec()
}

/// Symmetric int8 quantisation with scale max|v| / 127 (0 for an all-zero tensor).
fn quantize_int8(values: &[f32]) -> (f32, Vec<u8>) {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = max / 127.0;
    let q = values
        .iter()
        .map(|&v| {
            let q = if scale > 0.0 {
                (v / scale).round().clamp(-127.0, 127.0)
            } else {
                0.0
            };
            q as i8 as u8
        })
        .collect();
    (scale, q)
}

/// Keeps the largest-magnitude `density` fraction, as ascending u32 indices and bf16 values.
fn top_k(values: &[f32], density: f32) -> Encoded {
    let k = Encoding::kept(density, values.len());
    let mut order: Vec<u32> = (0..values.len() as u32).collect();
    if k < values.len() && k > 0 {
        order.select_nth_unstable_by(k - 1, |&a, &b| {
            values[b as usize]
                .abs()
                .total_cmp(&values[a as usize].abs())
                .then(a.cmp(&b))
        });
    }
    order.truncate(k);
    order.sort_unstable();
    let kept: Vec<f32> = order.iter().map(|&i| values[i as usize]).collect();
    Encoded {
        parts: vec![
            Part {
                suffix: INDICES_SUFFIX,
                dtype: Dtype::U32,
                shape: vec![k],
                bytes: bytemuck::cast_slice(&order).to_vec(),
            },
            Part {
                suffix: VALUES_SUFFIX,
                dtype: Dtype::Bf16,
                shape: vec![k],
                bytes: narrow(&kept, bf16::from_f32),
            },
        ],
        scale: None,
        kept: Some(k),
    }
}
