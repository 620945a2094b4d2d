//! Fused CPU kernels with their own backward pass (candle custom ops) for the element-wise and row-wise
//! layers that dominate a training step after the matmuls: GELU (erf), softmax over the last dimension,
//! and layer norm. Each replaces 4–10 primitive candle ops, their temporaries and their backward graph
//! with one multi-threaded pass forward and one backward.
//!
//! They run for contiguous-able f32 tensors on the CPU; everywhere else (CUDA, other dtypes) the layers
//! keep their composition of primitive ops, which has the same math.

mod gelu;
mod layer_norm;
mod rows;
mod softmax;

use candle_core::{DType, Tensor};

pub use gelu::gelu_erf;
pub use layer_norm::layer_norm;
pub use softmax::softmax_last_dim;

/// Whether the fused kernels apply to tensors like `xs` (f32 on the CPU).
pub fn applies(xs: &Tensor) -> bool {
    xs.device().is_cpu() && xs.dtype() == DType::F32
}

#[cfg(test)]
mod tests;
