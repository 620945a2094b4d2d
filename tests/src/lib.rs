//! End-to-end tests for coldfuse live in `tests/tests/`; this library holds their shared helpers.

pub mod coordinator;
pub mod datasets;
pub mod models;
pub mod process;
pub mod proxy;
pub mod s3;

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
