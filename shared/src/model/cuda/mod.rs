//! coldfuse's own CUDA kernels (feature `cuda`): `build.rs` compiles the `.cu` files beside this module
//! to PTX, which candle loads once per device. Each launch passes its kernel's parameters in order (the
//! SAFETY notes name them): PTX carries no types to check them against.
#![allow(unsafe_code)]

use candle_core::{
    backend::BackendStorage,
    cuda_backend::{
        cudarc::driver::{LaunchConfig, PushKernelArg},
        WrapErr,
    },
    CudaStorage, Layout, Result, Shape,
};

const DROPOUT_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/dropout.ptx"));

/// Inverted dropout of a contiguous f32 tensor on its GPU with the CPU kernel's mask: element i kept
/// when `hash(seed, i) >> 32 < threshold`, kept values times `scale`.
pub(crate) fn dropout(
    storage: &CudaStorage,
    layout: &Layout,
    seed: u64,
    threshold: u64,
    scale: f32,
) -> Result<(CudaStorage, Shape)> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("dropout needs a contiguous tensor")
    };
    let dev = storage.device();
    let x = storage.as_cuda_slice::<f32>()?.slice(start..end);
    let len = end - start;
    if len == 0 {
        // Nothing to launch, and the driver refuses an allocation of 0 bytes.
        return Ok((storage.try_clone(layout)?, layout.shape().clone()));
    }
    let n = len as u64;
    let func =
        dev.get_or_load_custom_func("coldfuse_dropout_f32", "coldfuse_dropout", DROPOUT_PTX)?;
    // SAFETY: the kernel below writes every one of the `len` elements before the tensor is read.
    let y = unsafe { dev.alloc::<f32>(len)? };
    let mut launch = func.builder();
    launch.arg(&x);
    launch.arg(&y);
    launch.arg(&n);
    launch.arg(&seed);
    launch.arg(&threshold);
    launch.arg(&scale);
    // A grid-stride loop: any grid covers all n elements.
    let cfg = LaunchConfig::for_num_elems(len.clamp(1, 1 << 30) as u32);
    // SAFETY: the arguments are the kernel's (const float *x, float *y, uint64_t n, uint64_t seed,
    // uint64_t threshold, float scale), in order, and x and y both hold n f32 values.
    unsafe { launch.launch(cfg) }.w()?;
    Ok((
        CudaStorage::wrap_cuda_slice(y, dev.clone()),
        layout.shape().clone(),
    ))
}
