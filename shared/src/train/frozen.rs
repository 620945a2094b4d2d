//! The linear probe's frozen body: run once (eval mode) over the training set and kept per example, so
//! that every epoch trains only the head instead of re-running the body. Heads read only the first
//! position of the hidden states and the pooled output (see [`crate::model::Head`]), so only those are kept.
//! A caller probing one base many times (several seeds, subsets of one pool) computes them once and
//! hands them to [`super::Trainer::with_features`].

use candle_core::{Device, Tensor};

use super::TrainError;
use crate::{
    classifier::Encoder,
    data::{sorted_batches, EncodedSet},
    model::{BodyOutput, ForwardCtx},
};

/// Per-example body features of a set, in set order.
#[derive(Debug, Clone)]
pub struct FrozenFeatures {
    /// First-position hidden state, `[n, hidden]`.
    first: Tensor,
    /// Pooled output where the body has a pooler, `[n, hidden]`.
    pooled: Option<Tensor>,
}

impl FrozenFeatures {
    /// Runs `encoder` (eval mode) over `set` in length-sorted batches of `batch_size`.
    pub fn compute(
        encoder: &Encoder,
        set: &EncodedSet,
        batch_size: usize,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let ctx = ForwardCtx::eval();
        let (mut order, mut firsts, mut pooled) = (Vec::new(), Vec::new(), Vec::new());
        for indices in sorted_batches(&set.lengths(), batch_size) {
            let lb = set.batch(&indices, device)?;
            let out = encoder.forward(&lb.batch, &ctx)?;
            firsts.push(
                out.hidden
                    .narrow(1, 0, 1)?
                    .squeeze(1)?
                    .contiguous()?
                    .detach(),
            );
            if let Some(p) = out.pooled {
                pooled.push(p.contiguous()?.detach());
            }
            order.extend(indices);
        }
        // Row k of the concatenation is example order[k]; put the rows back in set order.
        let mut inverse = vec![0u32; order.len()];
        for (k, &i) in order.iter().enumerate() {
            inverse[i] = k as u32;
        }
        let inverse = Tensor::new(inverse, device)?;
        let gather = |parts: &[Tensor]| -> Result<Tensor, TrainError> {
            Ok(Tensor::cat(parts, 0)?.index_select(&inverse, 0)?)
        };
        Ok(Self {
            first: gather(&firsts)?,
            pooled: if pooled.is_empty() {
                None
            } else {
                Some(gather(&pooled)?)
            },
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.first.dims()[0]
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The features of the examples `indices`, in that order (for a subset of the set they came from).
    pub fn subset(&self, indices: &[usize]) -> Result<Self, TrainError> {
        let out = self.body_output(indices)?;
        Ok(Self {
            first: out.hidden.squeeze(1)?,
            pooled: out.pooled,
        })
    }

    /// Errors unless these are the features of a set of `n` examples.
    pub(crate) fn check_len(&self, n: usize) -> Result<(), TrainError> {
        if self.len() == n {
            return Ok(());
        }
        Err(TrainError::Config(format!(
            "frozen features of {} examples given for a set of {n}",
            self.len()
        )))
    }

    /// The body output of the examples `indices`, shaped as the head expects (`hidden` `[b, 1, h]`).
    pub(crate) fn body_output(&self, indices: &[usize]) -> Result<BodyOutput, TrainError> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(TrainError::Config(format!(
                "example {i} of frozen features of {}",
                self.len()
            )));
        }
        let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
        let idx = Tensor::new(idx, self.first.device())?;
        Ok(BodyOutput {
            hidden: self.first.index_select(&idx, 0)?.unsqueeze(1)?,
            pooled: match &self.pooled {
                Some(p) => Some(p.index_select(&idx, 0)?),
                None => None,
            },
        })
    }
}
