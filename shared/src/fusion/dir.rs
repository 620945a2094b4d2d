//! Fusing into a complete model directory: the base's config and tokenizer files plus new weights,
//! assembled beside the target and renamed into place.

use std::{fs, path::Path};

use super::{fuse_weights, FuseOptions, FusionConfig, FusionError, FusionReport};
use crate::{
    checkpoint::{
        write::{prepare_target, staging_path},
        CheckpointError,
    },
    diff::{BaseInfo, DiffReader, BASE_WEIGHTS},
};

/// Fuses `diffs` into `base` and writes the next base as a model directory at `out` (absent or
/// empty). Every other regular file of the base directory (config, tokenizer, ...) is copied.
pub fn fuse_dir(
    base: &BaseInfo,
    diffs: &[DiffReader],
    config: &FusionConfig,
    out: &Path,
    options: &FuseOptions,
) -> Result<FusionReport, FusionError> {
    write_dir(base, out, |weights| {
        fuse_weights(base, diffs, config, weights, options)
    })
}

/// Writes a model directory at `out` (absent or empty): the base's other regular files, and the
/// weights `weights` writes to the path it is given.
pub(super) fn write_dir(
    base: &BaseInfo,
    out: &Path,
    weights: impl FnOnce(&Path) -> Result<FusionReport, FusionError>,
) -> Result<FusionReport, FusionError> {
    prepare_target(out).map_err(|e| match e {
        CheckpointError::OutputExists(p) => FusionError::OutputExists(p),
        CheckpointError::Io { path, source } => FusionError::Io { path, source },
        other => FusionError::Config(other.to_string()),
    })?;
    let staging = staging_path(out);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| FusionError::io(&staging, e))?;
    }
    fs::create_dir_all(&staging).map_err(|e| FusionError::io(&staging, e))?;
    let result = (|| {
        for entry in fs::read_dir(&base.dir).map_err(|e| FusionError::io(&base.dir, e))? {
            let entry = entry.map_err(|e| FusionError::io(&base.dir, e))?;
            let name = entry.file_name();
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            if !is_file || name == BASE_WEIGHTS || name.to_string_lossy().starts_with('.') {
                continue;
            }
            let dst = staging.join(&name);
            fs::copy(entry.path(), &dst).map_err(|e| FusionError::io(&dst, e))?;
        }
        weights(&staging.join(BASE_WEIGHTS))
    })();
    match result {
        Ok(report) => {
            fs::rename(&staging, out).map_err(|e| FusionError::io(out, e))?;
            Ok(report)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}
