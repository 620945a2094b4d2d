//! Mixed precision as PyTorch's autocast gives it: under [`Precision::Bf16`] every matmul of a forward pass
//! (dense layers, attention scores and context, DeBERTa's relative terms and conv) multiplies bf16 copies
//! of its operands, and so does its backward; weights (the f32 masters), gradients, the optimiser state,
//! softmax, layer norm, GELU, dropout and the loss stay f32. Products come back as f32 (PyTorch keeps the
//! dense output in bf16 until the next f32 op; we add the bias in f32), so a model's interface is f32
//! either way. The choice is scoped to the thread, like `torch.autocast`: [`autocast`] returns a guard.

use std::cell::Cell;

use candle_core::{DType, Result, Tensor};
use serde::{Deserialize, Serialize};

/// The precision of a forward pass's matmuls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (the default, and what the CPU's fused kernels compute).
    #[default]
    F32,
    /// Matmuls in bf16 with f32 accumulation, f32 master weights and optimiser state (AMP).
    Bf16,
}

impl Precision {
    /// Whether this is the default, f32.
    pub fn is_f32(&self) -> bool {
        *self == Self::F32
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "f32" | "fp32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!("unknown precision {other:?} (f32, bf16)")),
        }
    }
}

thread_local! {
    static CURRENT: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// Restores the thread's previous precision when dropped.
#[derive(Debug)]
#[must_use = "the precision holds only while the guard lives"]
pub struct Autocast {
    previous: Precision,
}

impl Drop for Autocast {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// Runs this thread's matmuls in `precision` until the returned guard is dropped.
pub fn autocast(precision: Precision) -> Autocast {
    Autocast {
        previous: CURRENT.with(|c| c.replace(precision)),
    }
}

/// This thread's current matmul precision.
pub fn current() -> Precision {
    CURRENT.with(Cell::get)
}

/// `a · b` (candle's batched `matmul`) in the current precision, returned in `a`'s dtype.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    in_current_precision(a, b, Tensor::matmul)
}

/// `a · b` with broadcasting of the batch dimensions, in the current precision, in `a`'s dtype.
pub fn broadcast_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    in_current_precision(a, b, Tensor::broadcast_matmul)
}

/// `product(a, b)` on operands in the current precision, returned in `a`'s dtype.
fn in_current_precision(
    a: &Tensor,
    b: &Tensor,
    product: fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    match current() {
        Precision::F32 => product(a, b),
        Precision::Bf16 => {
            product(&a.to_dtype(DType::BF16)?, &b.to_dtype(DType::BF16)?)?.to_dtype(a.dtype())
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn the_guard_scopes_the_precision_and_products_round_through_bf16() {
        let a = Tensor::new(&[[1.0f32 + 1.0 / 512.0, 2.0]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[1.0f32], [0.0]], &Device::Cpu).unwrap();
        let at = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        assert_eq!(current(), Precision::F32);
        assert_eq!(at(matmul(&a, &b).unwrap()), 1.0 + 1.0 / 512.0);
        {
            let _bf16 = autocast(Precision::Bf16);
            let product = matmul(&a, &b).unwrap();
            assert_eq!(product.dtype(), DType::F32);
            // 1 + 2⁻⁹ is not a bf16 (8 significant bits): the operand was rounded.
            assert_eq!(at(product), 1.0);
            assert_eq!(at(broadcast_matmul(&a, &b).unwrap()), 1.0);
        }
        assert_eq!(current(), Precision::F32);
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!("fp8".parse::<Precision>().is_err());
    }
}
