//! A padded batch of token ids, the input every encoder takes.

use candle_core::{Device, Tensor};

use crate::model::ModelError;

/// A padded batch of token ids with its attention mask and segment ids, kept both as host vectors
/// (for id-derived inputs such as RoBERTa's position ids) and as device tensors.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids, row-major `[batch, seq]`.
    pub ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding, row-major `[batch, seq]`.
    pub mask: Vec<u32>,
    /// Segment (token type) ids, row-major `[batch, seq]`.
    pub type_ids: Vec<u32>,
    /// Number of sequences.
    pub batch_size: usize,
    /// Padded sequence length.
    pub seq_len: usize,
    /// `ids` as a `[batch, seq]` u32 tensor.
    pub ids_t: Tensor,
    /// `mask` as a `[batch, seq]` f32 tensor.
    pub mask_t: Tensor,
    /// `type_ids` as a `[batch, seq]` u32 tensor.
    pub type_ids_t: Tensor,
}

impl Batch {
    /// Builds a batch from row-major host vectors; `type_ids` defaults to all zeros.
    pub fn new(
        ids: Vec<u32>,
        mask: Vec<u32>,
        type_ids: Option<Vec<u32>>,
        batch_size: usize,
        seq_len: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let n = batch_size * seq_len;
        let type_ids = type_ids.unwrap_or_else(|| vec![0; n]);
        if ids.len() != n || mask.len() != n || type_ids.len() != n {
            return Err(ModelError::BadInput(format!(
                "batch of {batch_size}x{seq_len} needs {n} ids, mask and type ids; got {}, {} and {}",
                ids.len(),
                mask.len(),
                type_ids.len()
            )));
        }
        let shape = (batch_size, seq_len);
        let ids_t = Tensor::from_vec(ids.clone(), shape, device)?;
        let mask_f: Vec<f32> = mask.iter().map(|&m| m as f32).collect();
        let mask_t = Tensor::from_vec(mask_f, shape, device)?;
        let type_ids_t = Tensor::from_vec(type_ids.clone(), shape, device)?;
        Ok(Self {
            ids,
            mask,
            type_ids,
            batch_size,
            seq_len,
            ids_t,
            mask_t,
            type_ids_t,
        })
    }

    /// Right-pads unpadded rows of `(token ids, segment ids)` to the longest row with `pad_id`
    /// (mask 0, segment 0), as [`crate::TextTokenizer::encode`] pads.
    pub fn from_rows(
        rows: &[(&[u32], &[u32])],
        pad_id: u32,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let seq_len = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let n = rows.len() * seq_len;
        let (mut ids, mut mask, mut types) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (row_ids, row_types) in rows {
            if row_types.len() != row_ids.len() {
                return Err(ModelError::BadInput(format!(
                    "{} token ids but {} segment ids",
                    row_ids.len(),
                    row_types.len()
                )));
            }
            let pad = seq_len - row_ids.len();
            ids.extend_from_slice(row_ids);
            ids.extend(std::iter::repeat_n(pad_id, pad));
            mask.extend(std::iter::repeat_n(1, row_ids.len()));
            mask.extend(std::iter::repeat_n(0, pad));
            types.extend_from_slice(row_types);
            types.extend(std::iter::repeat_n(0, pad));
        }
        Self::new(ids, mask, Some(types), rows.len(), seq_len, device)
    }

    /// The device the batch tensors live on.
    pub fn device(&self) -> &Device {
        self.ids_t.device()
    }
}
