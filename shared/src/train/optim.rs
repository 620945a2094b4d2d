//! AdamW with decoupled weight decay (Loshchilov & Hutter, arXiv:1711.05101) as PyTorch computes it,
//! fused: one pass over each parameter's f32 data updates moments and weights in place, instead of
//! about ten candle tensor ops per parameter.
//!
//! Gradients of the micro-batches of one step are summed (scaled by each micro-batch's share of the
//! examples); their global L2 norm gives the clipping factor, applied inside the same pass. On the CPU
//! the sums and moments are host buffers and the weights are updated in place through candle's
//! [`InplaceOp1`]. On a GPU everything stays on the device: sums, moments and the update are candle
//! tensor ops with the same per-element formula, and only the norm (one scalar per step) comes back.

use std::{cell::RefCell, collections::BTreeMap};

use candle_core::{
    backend::BackendStorage, backprop::GradStore, CpuStorage, DType, Device, InplaceOp1, Layout,
    Storage, Tensor, Var,
};

use rayon::prelude::*;

use super::TrainError;
use crate::model::fused::math::vectorized;

/// Values per rayon task of the element-wise passes (gradient sums, norm, update).
const CHUNK: usize = 1 << 15;

/// AdamW hyper-parameters other than the (scheduled) learning rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay for the parameters it applies to.
    pub weight_decay: f64,
}

/// Whether weight decay applies to a parameter: not to biases and LayerNorm weights (transformers'
/// Trainer rule, by name: `*.bias`, `*LayerNorm.*`, `*layer_norm*`, DeBERTa's `encoder.LayerNorm.*` and
/// `encoder.conv.LayerNorm.*` included).
pub fn decays(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let is_bias = lower == "bias" || lower.ends_with(".bias") || lower.ends_with("_bias");
    let is_norm = lower.contains("layernorm") || lower.contains("layer_norm");
    !(is_bias || is_norm)
}

/// A parameter's moments and gradient sum (over the current step's micro-batches): host buffers for
/// the fused CPU pass, or tensors on the parameter's device.
enum Moments {
    Host {
        m: Vec<f32>,
        v: Vec<f32>,
        grad: Vec<f32>,
    },
    Device {
        m: Tensor,
        v: Tensor,
        grad: Tensor,
    },
}

/// Per-parameter state.
struct Slot {
    name: String,
    var: Var,
    decay: bool,
    moments: Moments,
    /// Whether any micro-batch of the current step gave this parameter a gradient.
    has_grad: bool,
    /// Updates applied so far (PyTorch keeps one count per parameter).
    steps: u64,
}

/// Fused AdamW over a fixed set of named parameters.
pub struct AdamW {
    slots: Vec<Slot>,
    params: AdamWParams,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdamW({} tensors, {:?})", self.slots.len(), self.params)
    }
}

/// Per-step scalars of the update, in f32 as PyTorch applies them.
#[derive(Debug, Clone, Copy)]
struct StepScalars {
    grad_scale: f32,
    decay_factor: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    neg_step_size: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
}

/// The fused update of one contiguous chunk (the gradient sums are overwritten by the next step's
/// first micro-batch, so they need no clearing).
#[inline(always)]
fn update_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: StepScalars) {
    for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let grad = *g * s.grad_scale;
        *p *= s.decay_factor;
        // torch's lerp_(grad, 1 - β1) for weights below 0.5: m + w·(grad − m).
        *m += s.one_minus_beta1 * (grad - *m);
        *v = *v * s.beta2 + s.one_minus_beta2 * grad * grad;
        let denom = v.sqrt() / s.bias_correction2_sqrt + s.eps;
        *p += s.neg_step_size * (*m / denom);
    }
}

/// Runs [`update_chunk`] over the whole tensor in chunks on rayon's pool, each compiled for SIMD
/// (the same operations per element, so the same result as a scalar loop).
fn update_all(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: StepScalars) {
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| {
            vectorized(
                #[inline(always)]
                || update_chunk(p, g, m, v, s),
            )
        });
}

/// Σ g² of one chunk in f64 (eight partial sums, so that the loop vectorises).
#[inline(always)]
fn squares(g: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = g.chunks_exact(8);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum();
    for c in chunks {
        for k in 0..8 {
            acc[k] += f64::from(c[k]) * f64::from(c[k]);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Σ g² of a host buffer on rayon's pool; the parts are collected in order, then summed, so the sum does
/// not depend on the threads' timing.
fn host_squares(g: &[f32]) -> f64 {
    let parts: Vec<f64> = g
        .par_chunks(CHUNK)
        .map(|c| {
            vectorized(
                #[inline(always)]
                || squares(c),
            )
        })
        .collect();
    parts.iter().sum()
}

/// The in-place CPU update of one parameter's storage.
struct FusedUpdate<'a> {
    slot: RefCell<(&'a [f32], &'a mut [f32], &'a mut [f32])>,
    scalars: StepScalars,
}

impl InplaceOp1 for FusedUpdate<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("fused AdamW needs f32 weights, got {:?}", storage.dtype())
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("fused AdamW needs contiguous weights")
        };
        let mut slot = self.slot.borrow_mut();
        let (g, m, v) = &mut *slot;
        let p = &mut data[start..end];
        if p.len() != g.len() {
            candle_core::bail!("fused AdamW: {} weights but {} moments", p.len(), g.len())
        }
        update_all(p, g, m, v, self.scalars);
        Ok(())
    }
}

impl StepScalars {
    /// One update of `p` with the tensors' own ops on their device: the per-element formula of
    /// [`update_chunk`] in the same order, except that candle divides by a constant by multiplying by
    /// its inverse (so equal to about 1 ulp, not bit for bit).
    fn update_tensors(
        self,
        p: &Tensor,
        g: &Tensor,
        m: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let grad = (g * f64::from(self.grad_scale))?;
        let m = (m + ((&grad - m)? * f64::from(self.one_minus_beta1))?)?;
        let v =
            ((v * f64::from(self.beta2))? + ((&grad * f64::from(self.one_minus_beta2))? * &grad)?)?;
        let denom = ((v.sqrt()? / f64::from(self.bias_correction2_sqrt))? + f64::from(self.eps))?;
        let p = ((p * f64::from(self.decay_factor))?
            + ((&m / &denom)? * f64::from(self.neg_step_size))?)?;
        Ok((p, m, v))
    }
}

/// Adds `scale * grad` to `acc` (or sets it, for the first micro-batch), reading a CPU gradient in
/// place and copying others to the host.
fn accumulate_into(
    acc: &mut [f32],
    grad: &Tensor,
    scale: f32,
    first: bool,
) -> candle_core::Result<()> {
    let add = |acc: &mut [f32], g: &[f32]| {
        acc.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(acc, g)| {
                vectorized(
                    #[inline(always)]
                    || {
                        for (a, &g) in acc.iter_mut().zip(g) {
                            *a = if first { g * scale } else { *a + g * scale };
                        }
                    },
                )
            });
    };
    if grad.dtype() == DType::F32 && grad.device().is_cpu() {
        let (storage, layout) = grad.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            let g = &data[start..end];
            if g.len() != acc.len() {
                candle_core::bail!("gradient of {} values for {} weights", g.len(), acc.len())
            }
            add(acc, g);
            return Ok(());
        }
    }
    let g = grad
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    if g.len() != acc.len() {
        candle_core::bail!("gradient of {} values for {} weights", g.len(), acc.len())
    }
    add(acc, &g);
    Ok(())
}

impl AdamW {
    /// An optimizer over `vars` (f32, any device), with zero moments: host buffers when the parameters
    /// are on the CPU, tensors on their device otherwise.
    pub fn new(vars: &BTreeMap<String, Var>, params: AdamWParams) -> Result<Self, TrainError> {
        let on_device = vars.values().any(|v| !v.device().is_cpu());
        Self::build(vars, params, on_device)
    }

    fn build(
        vars: &BTreeMap<String, Var>,
        params: AdamWParams,
        on_device: bool,
    ) -> Result<Self, TrainError> {
        let slots = vars
            .iter()
            .map(|(name, var)| {
                if var.dtype() != DType::F32 {
                    return Err(TrainError::Config(format!(
                        "parameter {name} is {:?}; training needs f32 weights",
                        var.dtype()
                    )));
                }
                let n = var.elem_count();
                let moments = if on_device {
                    let zeros = || Tensor::zeros(n, DType::F32, var.device());
                    Moments::Device {
                        m: zeros()?,
                        v: zeros()?,
                        grad: zeros()?,
                    }
                } else {
                    Moments::Host {
                        m: vec![0.0; n],
                        v: vec![0.0; n],
                        grad: vec![0.0; n],
                    }
                };
                Ok(Slot {
                    name: name.clone(),
                    var: var.clone(),
                    decay: decays(name),
                    moments,
                    has_grad: false,
                    steps: 0,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { slots, params })
    }

    /// Number of trained values.
    pub fn num_values(&self) -> usize {
        self.slots.iter().map(|s| s.var.elem_count()).sum()
    }

    /// Names of the parameters that get weight decay.
    pub fn decayed(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|s| s.decay)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// Adds `scale` × the gradients of one micro-batch to the step's sums (`scale` = the micro-batch's
    /// share of the step's examples). Parameters without a gradient are left as they are.
    pub fn accumulate(&mut self, grads: &GradStore, scale: f32) -> Result<(), TrainError> {
        for slot in &mut self.slots {
            let Some(grad) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let first = !slot.has_grad;
            match &mut slot.moments {
                Moments::Host { grad: sum, .. } => accumulate_into(sum, grad, scale, first)?,
                Moments::Device { grad: sum, .. } => {
                    let scaled =
                        (grad.detach().flatten_all()?.to_dtype(DType::F32)? * f64::from(scale))?;
                    *sum = if first { scaled } else { (&*sum + scaled)? };
                }
            }
            slot.has_grad = true;
        }
        Ok(())
    }

    /// Global L2 norm of the summed gradients (on a GPU, the one value per step that comes back).
    pub fn grad_norm(&self) -> Result<f64, TrainError> {
        let mut on_device = Vec::new();
        let mut sum = 0f64;
        for slot in self.slots.iter().filter(|s| s.has_grad) {
            match &slot.moments {
                Moments::Host { grad, .. } => sum += host_squares(grad),
                Moments::Device { grad, .. } => {
                    on_device.push(grad.to_dtype(DType::F64)?.sqr()?.sum_all()?);
                }
            }
        }
        if !on_device.is_empty() {
            sum += Tensor::stack(&on_device, 0)?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
        Ok(sum.sqrt())
    }

    /// Applies one AdamW update with learning rate `lr` to every parameter that got a gradient, the
    /// gradients first multiplied by `grad_scale` (the clipping factor), and clears the sums.
    pub fn step(&mut self, lr: f64, grad_scale: f64) -> Result<(), TrainError> {
        let p = self.params;
        for slot in self.slots.iter_mut().filter(|s| s.has_grad) {
            slot.steps += 1;
            let t = slot.steps as i32;
            let wd = if slot.decay { p.weight_decay } else { 0.0 };
            let scalars = StepScalars {
                grad_scale: grad_scale as f32,
                decay_factor: (1.0 - lr * wd) as f32,
                one_minus_beta1: (1.0 - p.beta1) as f32,
                beta2: p.beta2 as f32,
                one_minus_beta2: (1.0 - p.beta2) as f32,
                neg_step_size: (-lr / (1.0 - p.beta1.powi(t))) as f32,
                bias_correction2_sqrt: (1.0 - p.beta2.powi(t)).sqrt() as f32,
                eps: p.eps as f32,
            };
            let tensor = slot.var.as_tensor();
            match &mut slot.moments {
                Moments::Host { m, v, grad }
                    if tensor.device().is_cpu() && tensor.is_contiguous() =>
                {
                    let op = FusedUpdate {
                        slot: RefCell::new((grad, m, v)),
                        scalars,
                    };
                    tensor.inplace_op1(&op)?;
                }
                Moments::Host { m, v, grad } => {
                    let mut host = tensor.flatten_all()?.to_vec1::<f32>()?;
                    update_all(&mut host, grad, m, v, scalars);
                    slot.var
                        .set(&Tensor::from_vec(host, tensor.shape(), tensor.device())?)?;
                }
                Moments::Device { m, v, grad } => {
                    let (p, new_m, new_v) =
                        scalars.update_tensors(&tensor.flatten_all()?, grad, m, v)?;
                    slot.var.set(&p.reshape(tensor.shape())?)?;
                    (*m, *v) = (new_m, new_v);
                }
            }
            slot.has_grad = false;
        }
        Ok(())
    }

    /// The moments (flat f32 tensors on the CPU) and update count of every parameter, for a run
    /// checkpoint.
    pub fn state(&self) -> Result<Vec<(&str, Tensor, Tensor, u64)>, TrainError> {
        self.slots
            .iter()
            .map(|s| {
                let (m, v) = match &s.moments {
                    Moments::Host { m, v, .. } => (
                        Tensor::from_slice(m, m.len(), &Device::Cpu)?,
                        Tensor::from_slice(v, v.len(), &Device::Cpu)?,
                    ),
                    Moments::Device { m, v, .. } => {
                        (m.to_device(&Device::Cpu)?, v.to_device(&Device::Cpu)?)
                    }
                };
                Ok((s.name.as_str(), m, v, s.steps))
            })
            .collect()
    }

    /// Restores moments and update counts saved by [`AdamW::state`]; every parameter must be present
    /// with its size.
    pub fn load_state(
        &mut self,
        mut state: BTreeMap<String, (Vec<f32>, Vec<f32>, u64)>,
    ) -> Result<(), String> {
        for slot in &mut self.slots {
            let (m, v, steps) = state
                .remove(&slot.name)
                .ok_or_else(|| format!("no optimizer state for {}", slot.name))?;
            let n = slot.var.elem_count();
            if m.len() != n || v.len() != n {
                return Err(format!(
                    "optimizer state for {} has {} values, the parameter {n}",
                    slot.name,
                    m.len(),
                ));
            }
            match &mut slot.moments {
                Moments::Host {
                    m: old_m, v: old_v, ..
                } => (*old_m, *old_v) = (m, v),
                Moments::Device {
                    m: old_m, v: old_v, ..
                } => {
                    let on = |x: Vec<f32>| Tensor::from_vec(x, n, slot.var.device());
                    (*old_m, *old_v) = (
                        on(m).map_err(|e| e.to_string())?,
                        on(v).map_err(|e| e.to_string())?,
                    );
                }
            }
            slot.steps = steps;
        }
        match state.keys().next() {
            Some(extra) => Err(format!("optimizer state for unknown parameter {extra}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_nn::{Optimizer, ParamsAdamW};

    use super::*;

    #[test]
    fn no_decay_for_biases_and_layer_norms() {
        for name in [
            "encoder.layer.0.attention.output.LayerNorm.weight",
            "encoder.layer.0.attention.output.LayerNorm.bias",
            "embeddings.LayerNorm.weight",
            "encoder.LayerNorm.weight",
            "encoder.conv.LayerNorm.weight",
            "encoder.layer.3.attention.self.query_proj.bias",
            "classifier.bias",
            "classifier.out_proj.bias",
        ] {
            assert!(!decays(name), "{name}");
        }
        for name in [
            "embeddings.word_embeddings.weight",
            "encoder.rel_embeddings.weight",
            "encoder.layer.0.attention.self.query.weight",
            "encoder.conv.conv.weight",
            "pooler.dense.weight",
            "classifier.weight",
        ] {
            assert!(decays(name), "{name}");
        }
    }

    /// The largest |a − b| of two f32 tensors.
    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Matches candle-nn's (unfused) AdamW over several steps, weight decay included.
    #[test]
    fn matches_candle_nn_adamw() {
        let dev = Device::Cpu;
        let init: Vec<f32> = (0..300)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let ours = Var::from_vec(init.clone(), (30, 10), &dev).unwrap();
        let theirs = Var::from_vec(init, (30, 10), &dev).unwrap();
        let vars = BTreeMap::from([("w".to_string(), ours.clone())]);
        let params = AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(&vars, params).unwrap();
        let mut reference = candle_nn::AdamW::new(
            vec![theirs.clone()],
            ParamsAdamW {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.1,
            },
        )
        .unwrap();
        let target = Tensor::arange(0f32, 300.0, &dev)
            .unwrap()
            .reshape((30, 10))
            .unwrap();
        let loss = |w: &Var| {
            (w.as_tensor() * &target)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
        };
        for _ in 0..5 {
            let grads = loss(&ours).backward().unwrap();
            opt.accumulate(&grads, 1.0).unwrap();
            opt.step(1e-2, 1.0).unwrap();
            reference.backward_step(&loss(&theirs)).unwrap();
        }
        let diff = max_abs_diff(ours.as_tensor(), theirs.as_tensor());
        assert!(diff < 1e-6, "max diff {diff}");
    }

    /// The device path (tensor ops, what a GPU runs) gives the fused host pass's weights, moments and
    /// norms over several clipped, decayed, accumulated steps; run here on the CPU.
    #[test]
    fn device_state_matches_the_fused_host_pass() {
        let dev = Device::Cpu;
        let init: Vec<f32> = (0..4000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let make = |on_device: bool| {
            let w = Var::from_vec(init.clone(), (40, 100), &dev).unwrap();
            let b = Var::from_vec(init[..100].to_vec(), 100, &dev).unwrap();
            let vars = BTreeMap::from([("w".to_string(), w), ("x.bias".to_string(), b)]);
            let params = AdamWParams {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.1,
            };
            (AdamW::build(&vars, params, on_device).unwrap(), vars)
        };
        let (mut host, host_vars) = make(false);
        let (mut device, device_vars) = make(true);
        assert!(matches!(device.slots[0].moments, Moments::Device { .. }));
        let target = Tensor::arange(0f32, 4000.0, &dev)
            .unwrap()
            .reshape((40, 100))
            .unwrap();
        let grads = |vars: &BTreeMap<String, Var>, k: f64| {
            let w = vars["w"].as_tensor();
            let b = vars["x.bias"].as_tensor();
            ((w * &target).unwrap().sqr().unwrap().sum_all().unwrap() * k)
                .unwrap()
                .add(&(b.sqr().unwrap().sum_all().unwrap() * (3.0 * k)).unwrap())
                .unwrap()
                .backward()
                .unwrap()
        };
        for step in 0..4 {
            for (opt, vars) in [(&mut host, &host_vars), (&mut device, &device_vars)] {
                opt.accumulate(&grads(vars, 1.0), 0.25).unwrap();
                opt.accumulate(&grads(vars, 0.5), 0.75).unwrap();
            }
            let (h, d) = (host.grad_norm().unwrap(), device.grad_norm().unwrap());
            assert!((h - d).abs() <= 1e-6 * h, "step {step}: norm {h} vs {d}");
            host.step(1e-2, (1.0 / h).min(1.0)).unwrap();
            device.step(1e-2, (1.0 / h).min(1.0)).unwrap();
        }
        for name in ["w", "x.bias"] {
            let diff = max_abs_diff(host_vars[name].as_tensor(), device_vars[name].as_tensor());
            assert!(diff <= 1e-6, "{name} differs by {diff}");
            assert_eq!(host_vars[name].dims(), device_vars[name].dims());
        }
        let (hs, ds) = (host.state().unwrap(), device.state().unwrap());
        for ((name, hm, hv, hsteps), (_, dm, dv, dsteps)) in hs.iter().zip(&ds) {
            assert_eq!(hsteps, dsteps);
            for (a, b) in [(hm, dm), (hv, dv)] {
                let diff = max_abs_diff(a, b);
                let scale = max_abs_diff(a, &a.zeros_like().unwrap());
                assert!(diff <= 1e-6 * scale, "{name} moments differ by {diff}");
            }
        }
    }

    /// Two half-weighted micro-batches give the same update as one full batch.
    #[test]
    fn accumulation_and_clipping() {
        let dev = Device::Cpu;
        let w = Var::from_vec(vec![1f32, -2.0, 3.0], 3, &dev).unwrap();
        let vars = BTreeMap::from([("w".to_string(), w.clone())]);
        let params = AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut opt = AdamW::new(&vars, params).unwrap();
        let g1 = (w.as_tensor() * 2.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (w.as_tensor() * 4.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        opt.accumulate(&g1, 0.5).unwrap();
        opt.accumulate(&g2, 0.5).unwrap();
        let norm = opt.grad_norm().unwrap();
        assert!((norm - 3.0 * 3f64.sqrt()).abs() < 1e-6, "norm {norm}");
        opt.step(0.1, 0.5).unwrap();
        // First Adam step moves every weight by lr·sign(g) whatever the scale.
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        for (g, want) in got.iter().zip([0.9f32, -2.1, 2.9]) {
            assert!((g - want).abs() < 1e-6, "{got:?}");
        }
        assert_eq!(opt.grad_norm().unwrap(), 0.0, "sums cleared after a step");
    }
}
