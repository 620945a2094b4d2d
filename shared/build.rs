//! With the `cuda` feature, compiles coldfuse's own CUDA kernels (`src/model/cuda/*.cu`) to PTX with `nvcc`
//! (from `$CUDA_ROOT/bin`, else `PATH`; `scripts/cuda-toolchain.sh` installs one), so that a build with the
//! feature, `cargo check` and `clippy` included, fails when they do not compile. The driver JIT-compiles
//! the PTX for the GPU it runs on: `CUDA_COMPUTE_CAP` (e.g. 90) sets the oldest GPU generation it
//! supports, 75 (Turing, the oldest CUDA 13 knows) when unset.

use std::{env, path::PathBuf, process::Command};

const KERNELS: &[&str] = &["dropout"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=CUDA_ROOT");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = env::var_os("CUDA_ROOT")
        .map(|root| PathBuf::from(root).join("bin").join("nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "75".into());
    let cap = cap.trim().trim_start_matches("sm_").to_owned();
    let digits = cap.strip_suffix('a').unwrap_or(&cap);
    assert!(
        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()),
        "CUDA_COMPUTE_CAP must be a number such as 90 (or 90a), got {cap:?}"
    );
    for kernel in KERNELS {
        let src = format!("src/model/cuda/{kernel}.cu");
        println!("cargo:rerun-if-changed={src}");
        let ptx = out.join(format!("{kernel}.ptx"));
        let status = Command::new(&nvcc)
            .args([
                "--ptx",
                "-O3",
                "-std=c++17",
                &format!("-arch=compute_{cap}"),
            ])
            .arg("-o")
            .arg(&ptx)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): the `cuda` feature needs nvcc; \
                     `eval \"$(scripts/cuda-toolchain.sh)\"` installs one",
                    nvcc.display()
                )
            });
        assert!(status.success(), "nvcc failed on {src}");
    }
}
