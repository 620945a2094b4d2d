//! Differentiable encoder models (every weight a candle `Var`) and their classification heads.
//!
//! Each architecture is one file (`bert.rs`, `roberta.rs`) or one folder (`deberta/`) plus one entry in
//! `arch.rs`.
//! The building blocks in `layers.rs` use only ops that candle can differentiate, because
//! candle-transformers' fused LayerNorm/softmax have no backward pass and would leave the body untrained.

mod arch;
pub mod bert;
pub mod bert_config;
mod ctx;
#[cfg(feature = "cuda")]
mod cuda;
pub mod deberta;
mod error;
pub mod fused;
pub mod layers;
pub mod loss;
mod params;
pub mod precision;
pub mod roberta;
pub mod transformer;

pub use arch::Architecture;
pub use ctx::ForwardCtx;
pub use error::ModelError;
pub use params::{Init, Params};
pub use precision::Precision;

use candle_core::Tensor;

use crate::batch::Batch;

/// What an encoder body returns for a batch.
#[derive(Debug, Clone)]
pub struct BodyOutput {
    /// Last hidden states, `[batch, seq, hidden]`.
    pub hidden: Tensor,
    /// Pooled first-token representation where the architecture has a pooler (BERT), `[batch, hidden]`.
    pub pooled: Option<Tensor>,
}

/// An encoder body: the part of the model that is fine-tuned, diffed and fused.
pub trait Body: Send + Sync {
    /// Runs the encoder on a batch.
    fn forward(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<BodyOutput, ModelError>;
}

/// A task head on top of a body: created fresh per task, never shared or fused. It reads only the first
/// position of `hidden` and the pooled output (the linear probe caches just those).
pub trait Head: Send + Sync {
    /// Maps the body output to logits `[batch, num_labels]`.
    fn forward(&self, out: &BodyOutput, ctx: &ForwardCtx) -> Result<Tensor, ModelError>;
}
