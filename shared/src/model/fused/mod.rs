//! Fused CPU kernels with their own backward pass (candle custom ops) for the element-wise and row-wise
//! layers that dominate a training step after the matmuls: GELU (erf), softmax over the last dimension,
//! layer norm, dropout (mask recomputed from a seed instead of stored) and the dense layer, each
//! replacing 4–10 primitive candle ops, their temporaries and their backward graph (where candle's
//! backprop zero-fills and adds one gradient buffer per node) with one node; and [`layer`], a whole
//! BERT/RoBERTa transformer layer as one node (strided GEMMs from [`gemm`], SIMD math from [`math`]).
//!
//! They run for contiguous-able f32 tensors on the CPU; everywhere else (CUDA, other dtypes) the layers
//! keep their composition of primitive ops, which has the same math.

mod dropout;
mod gelu;
mod gemm;
pub mod layer;
mod layer_norm;
mod linear;
pub(crate) mod math;
mod rows;
mod softmax;

use candle_core::{DType, Tensor};

pub use dropout::dropout;
pub use gelu::gelu_erf;
pub use layer_norm::layer_norm;
pub use linear::linear;
pub use softmax::softmax_last_dim;

/// Whether the fused kernels apply to tensors like `xs` (f32 on the CPU).
pub fn applies(xs: &Tensor) -> bool {
    xs.device().is_cpu() && xs.dtype() == DType::F32
}

#[cfg(test)]
pub(crate) mod tests;
