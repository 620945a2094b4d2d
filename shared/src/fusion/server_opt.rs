//! Server-side optimisers over the fused update (the FedOpt family, Reddi et al. 2021): the fusion's
//! update Δ = fused − base is treated as a pseudo-gradient. `none` is the paper's rule (base + Δ);
//! `momentum` is FedAvgM (m ← βm + Δ; x ← base + lr·m); `adam` is FedAdam (m ← β₁m + (1−β₁)Δ,
//! v ← β₂v + (1−β₂)Δ², x ← base + lr·m/(√v + τ), no bias correction, as in the paper).
//!
//! The state (m, and v for adam) is a safetensors file with `NAME::m` / `NAME::v` f32 tensors per
//! fused tensor, carried from iteration to iteration; everything streams chunk by chunk.

use std::{path::Path, str::FromStr};

use half::{bf16, f16};

use super::{config::named_params, FusionError};
use crate::{
    parallel::{default_threads, for_each_item},
    tensorfile::{Dtype, TensorFile, TensorFileWriter, TensorInfo, TensorSpec},
};

/// A server optimiser and its hyper-parameters (serialised as `{"kind": "momentum", ...}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ServerOptimizer {
    /// base + Δ (the paper; server learning rate 1, no momentum).
    #[default]
    None,
    /// FedAvgM: server momentum.
    Momentum {
        /// Server learning rate.
        lr: f32,
        /// Momentum coefficient β.
        beta: f32,
    },
    /// FedAdam.
    Adam {
        /// Server learning rate.
        lr: f32,
        /// β₁.
        beta1: f32,
        /// β₂.
        beta2: f32,
        /// τ, the adaptivity floor (the paper's ε).
        tau: f32,
    },
}

impl ServerOptimizer {
    /// Checks the hyper-parameters.
    pub fn validate(&self) -> Result<(), FusionError> {
        let ok = match *self {
            Self::None => true,
            Self::Momentum { lr, beta } => lr.is_finite() && lr > 0.0 && (0.0..1.0).contains(&beta),
            Self::Adam {
                lr,
                beta1,
                beta2,
                tau,
            } => {
                lr.is_finite()
                    && lr > 0.0
                    && (0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && tau.is_finite()
                    && tau > 0.0
            }
        };
        if ok {
            Ok(())
        } else {
            Err(FusionError::Config(format!(
                "server optimiser {self:?}: lr > 0, betas in [0, 1), tau > 0"
            )))
        }
    }

    /// Whether it changes anything (`none` does not).
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }

    fn moments(&self) -> &'static [&'static str] {
        match self {
            Self::None => &[],
            Self::Momentum { .. } => &["m"],
            Self::Adam { .. } => &["m", "v"],
        }
    }
}

impl FromStr for ServerOptimizer {
    type Err = FusionError;

    /// Parses `none`, `momentum:lr=1,beta=0.9` or `adam:lr=0.01,beta1=0.9,beta2=0.99,tau=0.001`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (_, object) = named_params(s, "kind")?;
        let opt: Self = serde_json::from_value(object.into())
            .map_err(|e| FusionError::Config(format!("server optimiser `{s}`: {e}")))?;
        opt.validate()?;
        Ok(opt)
    }
}

const CHUNK: usize = 1 << 16;

/// Rewrites `fused` (base + Δ, written by the fusion engine) as base + step(Δ) for every tensor in
/// `names`, reading the previous state from `prev_state` (zeros when None) and writing the new state
/// to `state_out`. Returns the L2 norm of the applied step.
pub fn apply_server_optimizer(
    opt: ServerOptimizer,
    base: &TensorFile,
    fused: &Path,
    names: &[String],
    prev_state: Option<&Path>,
    state_out: &Path,
) -> Result<f64, FusionError> {
    opt.validate()?;
    if opt.is_none() {
        return Ok(f64::NAN);
    }
    let input = TensorFile::open(fused)?;
    let prev = prev_state.map(TensorFile::open).transpose()?;
    let specs = input.header.specs();
    let out = TensorFileWriter::create(fused, &specs, &input.header.metadata)?;
    let mut state_specs = Vec::new();
    for name in names {
        let info = input.info(name)?;
        for k in opt.moments() {
            state_specs.push(TensorSpec {
                name: format!("{name}::{k}"),
                dtype: Dtype::F32,
                shape: info.shape.clone(),
            });
        }
    }
    let state = TensorFileWriter::create(state_out, &state_specs, &Default::default())?;
    let mut items = Vec::new();
    for (t, info) in input.header.tensors.iter().enumerate() {
        let fused_index = names.iter().position(|n| n == &info.name);
        let numel = info.numel();
        let mut start = 0;
        while start < numel {
            let len = CHUNK.min(numel - start);
            items.push((t, fused_index, start, len));
            start += len;
        }
    }
    let ctx = Ctx {
        opt,
        base,
        input: &input,
        prev: prev.as_ref(),
        out: &out,
        state: &state,
        moments: opt.moments().len(),
    };
    let sums = for_each_item(default_threads(), items.len(), Buffers::default, |b, i| {
        let (t, fused_index, start, len) = items[i];
        ctx.run(b, t, fused_index, start, len)
    })?;
    out.finish()?;
    state.finish()?;
    Ok(sums.iter().sum::<f64>().sqrt())
}

#[derive(Default)]
struct Buffers {
    base: Vec<f32>,
    x: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    halves: Vec<u16>,
    raw: Vec<u8>,
}

struct Ctx<'a> {
    opt: ServerOptimizer,
    base: &'a TensorFile,
    input: &'a TensorFile,
    prev: Option<&'a TensorFile>,
    out: &'a TensorFileWriter,
    state: &'a TensorFileWriter,
    moments: usize,
}

impl Ctx<'_> {
    fn run(
        &self,
        b: &mut Buffers,
        t: usize,
        fused_index: Option<usize>,
        start: usize,
        len: usize,
    ) -> Result<f64, FusionError> {
        let info = &self.input.header.tensors[t];
        let Some(k) = fused_index else {
            b.raw.resize(len * info.dtype.size(), 0);
            self.input.read_raw(info, start, &mut b.raw)?;
            self.out.write_at(t, start, &b.raw)?;
            return Ok(0.0);
        };
        let base_info = self.base.info(&info.name)?;
        for buf in [&mut b.base, &mut b.x, &mut b.m, &mut b.v] {
            buf.resize(len, 0.0);
        }
        self.base
            .read_f32(base_info, start, &mut b.base, &mut b.halves)?;
        self.input.read_f32(info, start, &mut b.x, &mut b.halves)?;
        self.read_moment(&info.name, "m", start, &mut b.m)?;
        if self.moments == 2 {
            self.read_moment(&info.name, "v", start, &mut b.v)?;
        }
        let mut sum_sq = 0f64;
        for j in 0..len {
            let delta = b.x[j] - b.base[j];
            let step = match self.opt {
                ServerOptimizer::None => delta,
                ServerOptimizer::Momentum { lr, beta } => {
                    b.m[j] = beta * b.m[j] + delta;
                    lr * b.m[j]
                }
                ServerOptimizer::Adam {
                    lr,
                    beta1,
                    beta2,
                    tau,
                } => {
                    b.m[j] = beta1 * b.m[j] + (1.0 - beta1) * delta;
                    b.v[j] = beta2 * b.v[j] + (1.0 - beta2) * delta * delta;
                    lr * b.m[j] / (b.v[j].sqrt() + tau)
                }
            };
            b.x[j] = b.base[j] + step;
            sum_sq += (step as f64) * (step as f64);
            if !b.x[j].is_finite() {
                return Err(FusionError::NonFinite {
                    tensor: info.name.clone(),
                    index: start + j,
                });
            }
        }
        self.write_values(b, info, t, start)?;
        self.state
            .write_at(k * self.moments, start, bytemuck::cast_slice(&b.m))?;
        if self.moments == 2 {
            self.state
                .write_at(k * 2 + 1, start, bytemuck::cast_slice(&b.v))?;
        }
        Ok(sum_sq)
    }

    fn read_moment(
        &self,
        name: &str,
        which: &str,
        start: usize,
        out: &mut [f32],
    ) -> Result<(), FusionError> {
        match self
            .prev
            .and_then(|p| p.header.get(&format!("{name}::{which}")).map(|i| (p, i)))
        {
            Some((p, i)) => Ok(p.read_f32(i, start, out, &mut Vec::new())?),
            None => {
                out.fill(0.0);
                Ok(())
            }
        }
    }

    fn write_values(
        &self,
        b: &mut Buffers,
        info: &TensorInfo,
        t: usize,
        start: usize,
    ) -> Result<(), FusionError> {
        use half::slice::HalfFloatSliceExt;
        match info.dtype {
            Dtype::F16 => {
                b.halves.resize(b.x.len(), 0);
                bytemuck::cast_slice_mut::<u16, f16>(&mut b.halves).convert_from_f32_slice(&b.x);
                self.out
                    .write_at(t, start, bytemuck::cast_slice(&b.halves))?;
            }
            Dtype::Bf16 => {
                b.halves.resize(b.x.len(), 0);
                bytemuck::cast_slice_mut::<u16, bf16>(&mut b.halves).convert_from_f32_slice(&b.x);
                self.out
                    .write_at(t, start, bytemuck::cast_slice(&b.halves))?;
            }
            _ => self.out.write_at(t, start, bytemuck::cast_slice(&b.x))?,
        }
        Ok(())
    }
}
