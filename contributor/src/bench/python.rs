//! Finding (or installing) a Python with NumPy for reference implementations.

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
    let ok = Command::new(python)
        .args(["-c", "import numpy"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!("{} cannot import numpy", python.display());
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
