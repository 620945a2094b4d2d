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

/// Where each `(query, key)` score of the relative terms is read from, as flat indices into the
/// `[seq, 2 * span]` score rows, so that one `index_select` per term (over `batch * heads` rows)
/// replaces transformers' `gather` with an index expanded to `[batch * heads, seq, seq]`.
#[derive(Debug, Clone)]
pub struct RelativeIndex {
    /// `[seq * seq]`: for query `q` and key `k`, `q * 2span + c2p(q, k)` into the query-by-position
    /// scores (content→position).
    pub c2p: Tensor,
    /// `[seq * seq]`: for query `q` and key `k`, `k * 2span + p2c(k, q)` into the key-by-position
    /// scores (position→content, already transposed to query-major order).
    pub p2c: Tensor,
}

impl RelativeIndex {
    /// Builds both indices for sequences of `len` tokens.
    pub fn new(spec: &RelativeSpec, len: usize, device: &Device) -> Result<Self, ModelError> {
        let span = spec.span as i64;
        let rows = 2 * spec.span;
        let clamp = |v: i64| v.clamp(0, 2 * span - 1) as usize;
        let mut c2p = Vec::with_capacity(len * len);
        let mut p2c = Vec::with_capacity(len * len);
        for q in 0..len {
            for k in 0..len {
                c2p.push((q * rows + clamp(relative_position(spec, q, k) + span)) as u32);
                p2c.push((k * rows + clamp(-relative_position(spec, k, q) + span)) as u32);
            }
        }
        Ok(Self {
            c2p: Tensor::from_vec(c2p, len * len, device)?,
            p2c: Tensor::from_vec(p2c, len * len, device)?,
        })
    }

    /// Picks `[batch, heads, seq, seq]` scores out of `[batch, heads, seq, 2 * span]` ones.
    pub fn select(scores: &Tensor, index: &Tensor) -> Result<Tensor, ModelError> {
        let (b, h, t, rows) = scores.dims4()?;
        Ok(scores
            .contiguous()?
            .reshape((b * h, t * rows))?
            .index_select(index, 1)?
            .reshape((b, h, t, t))?)
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
    fn deberta_relative_index_reads_clamped_positions_from_query_and_key_rows() {
        let spec = RelativeSpec {
            span: 4,
            buckets: None,
        };
        let (len, rows) = (6, 8);
        let idx = RelativeIndex::new(&spec, len, &Device::Cpu).unwrap();
        let c2p = idx.c2p.to_vec1::<u32>().unwrap();
        let p2c = idx.p2c.to_vec1::<u32>().unwrap();
        // Position row `clamp(q - k + span)`; c2p reads it from query q's scores, p2c from key k's.
        let c2p_at = |q: usize, k: usize| c2p[q * len + k] - (q * rows) as u32;
        let p2c_at = |q: usize, k: usize| p2c[q * len + k] - (k * rows) as u32;
        let row =
            |f: &dyn Fn(usize, usize) -> u32, q| (0..len).map(|k| f(q, k)).collect::<Vec<_>>();
        assert_eq!(row(&c2p_at, 0), vec![4, 3, 2, 1, 0, 0]);
        assert_eq!(row(&c2p_at, 5), vec![7, 7, 7, 6, 5, 4]);
        assert_eq!(row(&p2c_at, 0), vec![4, 3, 2, 1, 0, 0]);
        assert_eq!(row(&p2c_at, 5), vec![7, 7, 7, 6, 5, 4]);
    }
}
