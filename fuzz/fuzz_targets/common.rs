//! Helpers shared by the fuzz targets: a scratch file in RAM and a fixed tiny base.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// A per-process scratch directory (tmpfs when available).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
        let dir = Path::new(root).join(format!("coldfuse-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// Writes `bytes` to the scratch file `name` and returns its path.
pub fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}
