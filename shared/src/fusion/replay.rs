//! One iteration's fusion as a pure function of its recorded inputs (parent base, accepted diffs with
//! their staleness, fusion settings, server optimiser and its previous state). The coordinator runs it
//! to make a base; `coldfuse verify` runs it again to check a published one bit for bit.

use std::path::{Path, PathBuf};

use super::{
    apply_server_optimizer, fuse_dir, FuseOptions, FusionConfig, FusionError, FusionReport,
    ServerOptimizer,
};
use crate::{
    api::SyncMode,
    diff::{BaseInfo, DiffManifest, DiffReader, BASE_WEIGHTS},
};

/// One accepted diff as the fusion takes it.
#[derive(Debug, Clone)]
pub struct RecordedDiff {
    /// The diff file.
    pub path: PathBuf,
    /// Its manifest as submitted.
    pub manifest: DiffManifest,
    /// Iterations between its base and the parent (0 when synchronous); scales it by 1/√(1+τ).
    pub staleness: u64,
}

/// The inputs of one iteration's fusion.
#[derive(Debug, Clone)]
pub struct ReplayInputs<'a> {
    /// The parent base directory.
    pub parent_dir: &'a Path,
    /// SHA-256 of the parent's weights.
    pub parent_sha256: &'a str,
    /// The accepted diffs.
    pub diffs: &'a [RecordedDiff],
    /// Fusion strategy and parameters.
    pub fusion: &'a FusionConfig,
    /// Server optimiser over the fused update.
    pub optimizer: ServerOptimizer,
    /// Its state after the parent iteration, if any.
    pub prev_state: Option<&'a Path>,
}

/// What a replay produced.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The fusion report.
    pub report: FusionReport,
    /// Architecture name of the base.
    pub architecture: String,
}

/// Fuses `inputs` into the model directory `out` (absent or empty); with a server optimiser, also
/// writes its new state to `state_out`.
pub fn replay(
    inputs: &ReplayInputs<'_>,
    out: &Path,
    state_out: &Path,
) -> Result<Replayed, FusionError> {
    let base = BaseInfo::open_with_sha256(inputs.parent_dir, inputs.parent_sha256.to_string())
        .map_err(|e| FusionError::Config(format!("parent base: {e}")))?;
    let readers = inputs
        .diffs
        .iter()
        .map(|d| {
            // A stale diff (asynchronous mode) is checked against the parent's layout and scaled down.
            let mut manifest = d.manifest.clone();
            manifest.base.sha256 = inputs.parent_sha256.to_string();
            DiffReader::open(&d.path, manifest, &base)
                .map(|mut r| {
                    r.scale = SyncMode::staleness_scale(d.staleness);
                    r
                })
                .map_err(|e| FusionError::Diff {
                    contributor: d.manifest.contributor.clone(),
                    sha256: d.manifest.diff_sha256.clone(),
                    source: Box::new(e),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let report = fuse_dir(&base, &readers, inputs.fusion, out, &FuseOptions::default())?;
    if !inputs.optimizer.is_none() {
        // Every tensor any diff covers (a partial diff is zeros elsewhere), in the base's order.
        let names: Vec<String> = base
            .file
            .header
            .names()
            .filter(|n| readers.iter().any(|r| r.tensor(n).is_some()))
            .map(str::to_string)
            .collect();
        apply_server_optimizer(
            inputs.optimizer,
            &base.file,
            &out.join(BASE_WEIGHTS),
            &names,
            inputs.prev_state,
            state_out,
        )?;
    }
    Ok(Replayed {
        report,
        architecture: base.architecture.name.to_string(),
    })
}
