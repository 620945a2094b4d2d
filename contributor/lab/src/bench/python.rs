//! Finding (or installing) a Python with NumPy or PyTorch for reference implementations.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

/// A Python interpreter that imports `numpy`: `$COLDFUSE_NUMPY_PYTHON`, or a venv under the coldfuse
/// cache (created with `pip install numpy` on first use).
pub fn numpy_python() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("COLDFUSE_NUMPY_PYTHON") {
        let p = PathBuf::from(p);
        check(&p)?;
        return Ok(p);
    }
    let venv = cache_dir().join("bench-venv");
    let python = venv.join("bin/python");
    if check(&python).is_ok() {
        return Ok(python);
    }
    eprintln!("installing numpy into {} ...", venv.display());
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "numpy"]))?;
    check(&python)?;
    Ok(python)
}

/// A Python that imports `torch` and `transformers`: `$COLDFUSE_TORCH_PYTHON`, the golden-fixture venv
/// (`$COLDFUSE_PYREF` or `~/.cache/coldfuse/pyref`, see scripts/golden/setup.sh), or that venv created
/// now (PyPI's torch is a ~5.6 GB CUDA build that also runs on the CPU; a few minutes).
pub fn torch_python() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("COLDFUSE_TORCH_PYTHON") {
        let p = PathBuf::from(p);
        check_imports(&p, "import torch, transformers")?;
        return Ok(p);
    }
    let venv = std::env::var_os("COLDFUSE_PYREF")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("pyref"));
    let python = venv.join("bin/python");
    if check_imports(&python, "import torch, transformers").is_ok() {
        return Ok(python);
    }
    eprintln!(
        "installing torch + transformers into {} (≈5.6 GB, a few minutes) ...",
        venv.display()
    );
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "torch",
        "transformers==5.23.0",
        "safetensors",
    ]))?;
    check_imports(&python, "import torch, transformers")?;
    Ok(python)
}

/// `$COLDFUSE_CACHE`, or `~/.cache/coldfuse`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("COLDFUSE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
            Path::new(&home).join(".cache/coldfuse")
        })
}

fn check(python: &Path) -> anyhow::Result<()> {
    check_imports(python, "import numpy")
}

fn check_imports(python: &Path, imports: &str) -> anyhow::Result<()> {
    let ok = Command::new(python)
        .args(["-c", imports])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!("{} cannot `{imports}`", python.display());
    }
    Ok(())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
