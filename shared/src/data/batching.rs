//! Examples tokenized once, then cut into padded batches: length-bucketed and shuffled for training,
//! length-sorted for evaluation.

use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use super::{Example, Target};
use crate::{
    batch::Batch,
    model::ModelError,
    tokenize::{TextTokenizer, TokenizeError},
};

/// Batches per length bucket: a bucket holds this many batches' worth of shuffled examples, sorted by
/// length before it is cut, so that padding stays small while batches still mix.
pub const BUCKET_BATCHES: usize = 50;

/// One tokenized example.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedRow {
    /// Token ids, special tokens included, truncated to the tokenizer's `max_len`.
    pub ids: Vec<u32>,
    /// Segment ids.
    pub type_ids: Vec<u32>,
    /// The target.
    pub target: Target,
}

/// Examples tokenized once and kept for every epoch.
#[derive(Debug, Clone)]
pub struct EncodedSet {
    rows: Vec<EncodedRow>,
    pad_id: u32,
}

/// A padded batch with its targets.
#[derive(Debug, Clone)]
pub struct LabelledBatch {
    /// Token ids, mask and segments.
    pub batch: Batch,
    /// Class indices (u32 `[batch]`) or regression values (f32 `[batch]`).
    pub targets: Tensor,
    /// Which rows of the set are in the batch, in order.
    pub indices: Vec<usize>,
}

impl EncodedSet {
    /// Tokenizes `examples` (single texts and pairs alike) with `tokenizer`.
    pub fn encode(examples: &[Example], tokenizer: &TextTokenizer) -> Result<Self, TokenizeError> {
        let mut rows: Vec<Option<EncodedRow>> = vec![None; examples.len()];
        let (paired, single): (Vec<usize>, Vec<usize>) =
            (0..examples.len()).partition(|&i| examples[i].pair.is_some());
        for (group, with_pairs) in [(single, false), (paired, true)] {
            if group.is_empty() {
                continue;
            }
            let texts: Vec<&str> = group.iter().map(|&i| examples[i].text.as_str()).collect();
            let pairs: Option<Vec<&str>> = with_pairs.then(|| {
                group
                    .iter()
                    .map(|&i| examples[i].pair.as_deref().unwrap_or_default())
                    .collect()
            });
            let encoded = tokenizer.encode_each(&texts, pairs.as_deref())?;
            for (&i, (ids, type_ids)) in group.iter().zip(encoded) {
                rows[i] = Some(EncodedRow {
                    ids,
                    type_ids,
                    target: examples[i].target,
                });
            }
        }
        Ok(Self {
            rows: rows.into_iter().flatten().collect(),
            pad_id: tokenizer.pad_id(),
        })
    }

    /// A set from already tokenized rows, padded with `pad_id`.
    pub fn from_rows(rows: Vec<EncodedRow>, pad_id: u32) -> Self {
        Self { rows, pad_id }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the set has no examples.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The tokenized rows.
    pub fn rows(&self) -> &[EncodedRow] {
        &self.rows
    }

    /// Token count of every row.
    pub fn lengths(&self) -> Vec<usize> {
        self.rows.iter().map(|r| r.ids.len()).collect()
    }

    /// The rows at `indices`, in that order, as a set of their own.
    pub fn subset(&self, indices: &[usize]) -> Result<Self, ModelError> {
        let rows = indices
            .iter()
            .map(|&i| self.row(i).cloned())
            .collect::<Result<_, _>>()?;
        Ok(Self {
            rows,
            pad_id: self.pad_id,
        })
    }

    fn row(&self, i: usize) -> Result<&EncodedRow, ModelError> {
        self.rows
            .get(i)
            .ok_or_else(|| ModelError::BadInput(format!("row {i} of a set of {}", self.rows.len())))
    }

    /// The rows at `indices` as one right-padded batch with targets, on `device`.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<LabelledBatch, ModelError> {
        let picked: Vec<&EncodedRow> = indices
            .iter()
            .map(|&i| self.row(i))
            .collect::<Result<_, _>>()?;
        let slices: Vec<(&[u32], &[u32])> = picked
            .iter()
            .map(|r| (r.ids.as_slice(), r.type_ids.as_slice()))
            .collect();
        let batch = Batch::from_rows(&slices, self.pad_id, device)?;
        let targets = targets_tensor(picked.iter().map(|r| r.target), device)?;
        Ok(LabelledBatch {
            batch,
            targets,
            indices: indices.to_vec(),
        })
    }
}

/// Class indices as u32 or values as f32; a mix of the two is an error.
fn targets_tensor(
    targets: impl Iterator<Item = Target>,
    device: &Device,
) -> Result<Tensor, ModelError> {
    let targets: Vec<Target> = targets.collect();
    let classes: Option<Vec<u32>> = targets
        .iter()
        .map(|t| match t {
            Target::Class(c) => Some(*c),
            Target::Value(_) => None,
        })
        .collect();
    if let Some(c) = classes {
        let n = c.len();
        return Ok(Tensor::from_vec(c, n, device)?);
    }
    let values: Option<Vec<f32>> = targets
        .iter()
        .map(|t| match t {
            Target::Value(v) => Some(*v),
            Target::Class(_) => None,
        })
        .collect();
    let values = values
        .ok_or_else(|| ModelError::BadInput("a batch mixes class and regression targets".into()))?;
    let n = values.len();
    Ok(Tensor::from_vec(values, n, device)?)
}

/// Training batches for one epoch: a seeded shuffle, cut into buckets of [`BUCKET_BATCHES`] batches,
/// each bucket sorted by length and cut into batches, then the batches shuffled.
pub fn bucketed_batches(lengths: &[usize], batch_size: usize, seed: u64) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let mut batches = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for bucket in order.chunks_mut(batch_size * BUCKET_BATCHES) {
        bucket.sort_by_key(|&i| lengths[i]);
        batches.extend(bucket.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// Batches of consecutive rows in set order (no shuffle).
pub fn sequential_batches(n: usize, batch_size: usize) -> Vec<Vec<usize>> {
    let all: Vec<usize> = (0..n).collect();
    all.chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Evaluation batches: rows sorted by length (stable), so that padding is minimal.
pub fn sorted_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers_each_once(batches: &[Vec<usize>], n: usize) {
        let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn bucketed_batches_cover_every_row_once_and_are_seeded() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 37) % 120 + 3).collect();
        let a = bucketed_batches(&lengths, 16, 7);
        covers_each_once(&a, lengths.len());
        assert_eq!(a, bucketed_batches(&lengths, 16, 7));
        assert_ne!(a, bucketed_batches(&lengths, 16, 8));
        assert!(a.iter().all(|b| !b.is_empty() && b.len() <= 16));
    }

    #[test]
    fn bucketing_cuts_padding() {
        let lengths: Vec<usize> = (0..2000).map(|i| (i * 7919) % 250 + 5).collect();
        let padded = |batches: &[Vec<usize>]| -> usize {
            batches
                .iter()
                .map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap_or(0))
                .sum()
        };
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(1));
        let random: Vec<Vec<usize>> = order.chunks(32).map(<[usize]>::to_vec).collect();
        let bucketed = bucketed_batches(&lengths, 32, 1);
        assert!(
            padded(&bucketed) * 10 < padded(&random) * 7,
            "bucketing saves >30% tokens"
        );
    }

    #[test]
    fn sequential_and_sorted() {
        assert_eq!(
            sequential_batches(5, 2),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        assert_eq!(sorted_batches(&[5, 1, 3], 2), vec![vec![1, 2], vec![0]]);
    }
}
