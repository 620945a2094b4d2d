//! Relative positions of disentangled attention, computed on the host: they depend only on the sequence
//! length, never on weights, so they are integer constants of each forward pass.

use candle_core::{Device, Tensor};

use super::config::RelativeSpec;
use crate::model::ModelError;

/// transformers' `make_log_bucket_position`: distances within `bucket_size / 2` are kept, longer ones are
/// log-compressed so that `max_position - 1` lands on the last bucket. Computed in f32 like PyTorch,
/// because the `ceil` makes bucket boundaries depend on the float rounding.
pub fn log_bucket(rel: i64, bucket_size: i64, max_position: i64) -> i64 {
    let mid = bucket_size / 2;
    let abs_pos = if rel < mid && rel > -mid {
        mid - 1
    } else {
        rel.abs()
    };
    if abs_pos <= mid {
        return rel;
    }
    let log_ratio = ((max_position - 1) as f64 / mid as f64) as f32;
    let scaled = (abs_pos as f32 / mid as f32).ln() / log_ratio.ln() * (mid - 1) as f32;
    let log_pos = scaled.ceil() + mid as f32;
    (log_pos * rel.signum() as f32) as i64
}

/// `query - key` for every pair, bucketed when the config asks for it (`build_relative_position`).
fn relative_position(spec: &RelativeSpec, query: usize, key: usize) -> i64 {
    let rel = query as i64 - key as i64;
    match spec.buckets {
        Some((size, max)) => log_bucket(rel, size, max),
        None => rel,
    }
}

/// Gather indices into the `2 * span` relative embedding rows for one sequence length.
#[derive(Debug, Clone)]
pub struct RelativeIndex {
    /// `[batch, heads, query, key]`: row of the position key that query `q` uses against key `k`
    /// (content→position).
    pub c2p: Tensor,
    /// `[batch, heads, key, query]`: row of the position query that key `k` uses for query `q`
    /// (position→content; transposed after the gather, as in transformers).
    pub p2c: Tensor,
}

impl RelativeIndex {
    /// Builds both index tensors for sequences of `len` tokens, expanded to `batch x heads`
    /// (candle's gather wants the index in the output's shape).
    pub fn new(
        spec: &RelativeSpec,
        len: usize,
        batch: usize,
        heads: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let span = spec.span as i64;
        let clamp = |v: i64| v.clamp(0, 2 * span - 1) as u32;
        let mut c2p = Vec::with_capacity(len * len);
        let mut p2c = Vec::with_capacity(len * len);
        for row in 0..len {
            for col in 0..len {
                c2p.push(clamp(relative_position(spec, row, col) + span));
                p2c.push(clamp(-relative_position(spec, row, col) + span));
            }
        }
        let expand = |v: Vec<u32>| -> Result<Tensor, ModelError> {
            Ok(Tensor::from_vec(v, (1, 1, len, len), device)?
                .broadcast_as((batch, heads, len, len))?
                .contiguous()?)
        };
        Ok(Self {
            c2p: expand(c2p)?,
            p2c: expand(p2c)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deberta_log_buckets_keep_short_distances_and_compress_long_ones() {
        for rel in -128..=128 {
            assert_eq!(log_bucket(rel, 256, 512), rel);
        }
        assert_eq!(log_bucket(511, 256, 512), 255);
        assert_eq!(log_bucket(-511, 256, 512), -255);
        assert!(
            log_bucket(2000, 256, 512) > 255,
            "beyond max is clamped later"
        );
    }

    #[test]
    fn deberta_relative_index_is_clamped_and_p2c_mirrors_c2p() {
        let spec = RelativeSpec {
            span: 4,
            buckets: None,
        };
        let idx = RelativeIndex::new(&spec, 6, 1, 1, &Device::Cpu).unwrap();
        let c2p = idx.c2p.squeeze(0).unwrap().squeeze(0).unwrap();
        let c2p = c2p.to_vec2::<u32>().unwrap();
        assert_eq!(c2p[0], vec![4, 3, 2, 1, 0, 0]);
        assert_eq!(c2p[5], vec![7, 7, 7, 6, 5, 4]);
        let p2c = idx.p2c.squeeze(0).unwrap().squeeze(0).unwrap();
        assert_eq!(p2c.to_vec2::<u32>().unwrap()[0], vec![4, 5, 6, 7, 7, 7]);
    }
}
