//! Task losses, matching PyTorch's reductions.

use candle_core::{DType, Tensor};

use super::{layers::log_softmax_last_dim, ModelError};

/// Mean cross-entropy of logits `[batch, classes]` against u32 labels `[batch]` (torch `CrossEntropyLoss`).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor, ModelError> {
    let logp = log_softmax_last_dim(logits)?;
    let picked = logp.gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?;
    Ok(picked.mean_all()?.neg()?)
}

/// Mean squared error of logits `[batch, 1]` against f32 targets `[batch]` (torch `MSELoss`).
pub fn mse(logits: &Tensor, targets: &Tensor) -> Result<Tensor, ModelError> {
    let pred = logits.flatten_all()?;
    Ok(pred
        .sub(&targets.to_dtype(pred.dtype())?)?
        .sqr()?
        .mean_all()?)
}
