//! Differentiable building blocks: linear, embedding, layer norm, softmax, activations.
//!
//! Written from primitive candle ops that all have a backward pass.

use candle_core::{Tensor, D};

use super::{Init, ModelError, Params};

/// A dense layer `y = x Wᵀ + b` with HF names `weight` `[out, in]` and `bias` `[out]`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads or creates a linear layer under `p`.
    pub fn new(p: &Params, in_dim: usize, out_dim: usize) -> Result<Self, ModelError> {
        let weight = p.get("weight", &[out_dim, in_dim], Init::Normal)?;
        let bias = Some(p.get("bias", &[out_dim], Init::Zeros)?);
        Ok(Self { weight, bias })
    }

    /// Loads or creates a linear layer without a bias (`nn.Linear(.., bias=False)`).
    pub fn no_bias(p: &Params, in_dim: usize, out_dim: usize) -> Result<Self, ModelError> {
        let weight = p.get("weight", &[out_dim, in_dim], Init::Normal)?;
        Ok(Self { weight, bias: None })
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[out]`, if the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Applies the layer to `[..., in]`, returning `[..., out]`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, ModelError> {
        if let Some(b) = &self.bias {
            if super::fused::applies(xs)
                && super::precision::current() == super::Precision::F32
                && super::fused::applies(&self.weight)
                && super::fused::applies(b)
            {
                return Ok(super::fused::linear(xs, &self.weight, b)?);
            }
        }
        let dims = xs.dims().to_vec();
        let in_dim = *dims
            .last()
            .ok_or_else(|| ModelError::BadInput("linear on a scalar".into()))?;
        let rows = xs.elem_count() / in_dim.max(1);
        let x2 = xs.reshape((rows, in_dim))?;
        let mut y = super::precision::matmul(&x2, &self.weight.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let mut out_dims = dims;
        *out_dims.last_mut().expect("non-empty dims") = self.weight.dim(0)?;
        Ok(y.reshape(out_dims)?)
    }
}

/// A lookup table `[num, dim]` under the HF name `weight`.
#[derive(Debug, Clone)]
pub struct Embedding {
    weight: Tensor,
    dim: usize,
}

impl Embedding {
    /// Loads or creates an embedding table under `p`.
    pub fn new(p: &Params, num: usize, dim: usize) -> Result<Self, ModelError> {
        Ok(Self {
            weight: p.get("weight", &[num, dim], Init::Normal)?,
            dim,
        })
    }

    /// Looks up ids of any shape, appending the embedding dimension.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor, ModelError> {
        let mut dims = ids.dims().to_vec();
        let flat = ids.flatten_all()?;
        let out = self.weight.index_select(&flat, 0)?;
        dims.push(self.dim);
        Ok(out.reshape(dims)?)
    }
}

/// Layer normalisation over the last dimension with HF names `weight` and `bias`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads or creates a layer norm under `p`.
    pub fn new(p: &Params, dim: usize, eps: f64) -> Result<Self, ModelError> {
        let weight = p.get("weight", &[dim], Init::Ones)?;
        let bias = p.get("bias", &[dim], Init::Zeros)?;
        Ok(Self { weight, bias, eps })
    }

    /// The scale `[dim]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The shift `[dim]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// ε added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Normalises `xs` over its last dimension.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, ModelError> {
        Ok(super::fused::layer_norm(
            xs,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

/// Softmax over the last dimension (fused on the CPU; see [`super::fused`]).
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor, ModelError> {
    Ok(super::fused::softmax_last_dim(xs)?)
}

/// Log-softmax over the last dimension.
pub fn log_softmax_last_dim(xs: &Tensor) -> Result<Tensor, ModelError> {
    let max = xs.max_keepdim(D::Minus1)?.detach();
    let shifted = xs.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// A hidden activation named as in HF configs (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU with erf (`gelu`).
    Gelu,
    /// Tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// ReLU.
    Relu,
    /// Tanh.
    Tanh,
}

impl Activation {
    /// Parses an HF `hidden_act` string; unknown names are an error, never a silent fallback.
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        match name {
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Self::GeluTanh),
            "relu" => Ok(Self::Relu),
            "tanh" => Ok(Self::Tanh),
            other => Err(ModelError::UnsupportedConfig(format!(
                "hidden_act `{other}`"
            ))),
        }
    }

    /// Applies the activation.
    pub fn forward(self, xs: &Tensor) -> Result<Tensor, ModelError> {
        Ok(match self {
            Self::Gelu => super::fused::gelu_erf(xs)?,
            Self::GeluTanh => xs.gelu()?,
            Self::Relu => xs.relu()?,
            Self::Tanh => xs.tanh()?,
        })
    }
}
