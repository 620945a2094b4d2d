//! Per-forward-pass context: train/eval mode and the seeded RNG behind dropout.

use std::sync::Mutex;

use candle_core::Tensor;
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::ModelError;

/// Train or eval mode plus a seeded RNG, so that dropout is on in training, off in eval, and
/// reproducible for a given seed on every device (candle's CPU RNG cannot be seeded).
#[derive(Debug)]
pub struct ForwardCtx {
    train: bool,
    /// Whether a backward pass may follow (fused nodes keep their activations for it).
    backward: bool,
    rng: Mutex<StdRng>,
}

impl ForwardCtx {
    /// Eval mode: dropout off, no backward expected (fused nodes keep no activations; a backward
    /// pass still works, recomputing them).
    pub fn eval() -> Self {
        Self {
            train: false,
            backward: false,
            rng: Mutex::new(StdRng::seed_from_u64(0)),
        }
    }

    /// Train mode: dropout on, masks drawn from an RNG seeded with `seed`.
    pub fn train(seed: u64) -> Self {
        Self {
            train: true,
            backward: true,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// Training with dropout off (deterministic steps, as the golden checks use): like
    /// [`Self::eval`], but fused nodes keep their activations for the backward pass.
    pub fn train_without_dropout() -> Self {
        Self {
            backward: true,
            ..Self::eval()
        }
    }

    /// Whether a backward pass is expected after this forward pass.
    pub fn expects_backward(&self) -> bool {
        self.backward
    }

    /// Whether dropout is active.
    pub fn is_train(&self) -> bool {
        self.train
    }

    /// The (probability, mask seed) of a fused kernel's dropout with probability `p`: `None` when
    /// dropout is off (eval mode or `p` = 0).
    pub fn dropout_seed(&self, p: f64) -> Result<Option<(f64, u64)>, ModelError> {
        if !self.train || p <= 0.0 {
            return Ok(None);
        }
        if p >= 1.0 {
            return Err(ModelError::BadInput(format!(
                "dropout probability {p} must be below 1"
            )));
        }
        Ok(Some((p, self.next_seed())))
    }

    fn next_seed(&self) -> u64 {
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random::<u64>()
    }

    /// Inverted dropout with probability `p`: zeroes elements and scales the rest by 1/(1-p).
    pub fn dropout(&self, xs: &Tensor, p: f64) -> Result<Tensor, ModelError> {
        if !self.train || p <= 0.0 {
            return Ok(xs.clone());
        }
        if p >= 1.0 {
            return Err(ModelError::BadInput(format!(
                "dropout probability {p} must be below 1"
            )));
        }
        // One seed per call on every device and dtype, so that the fused CPU layer, the composed ops
        // and a GPU draw the same masks.
        Ok(super::fused::dropout(xs, p, self.next_seed())?)
    }
}
