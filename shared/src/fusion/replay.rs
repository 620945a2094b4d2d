//! One iteration's fusion as a pure function of its recorded inputs (parent base, accepted diffs with
//! their staleness, fusion settings, server optimiser and its previous state). The coordinator runs it
//! to make a base; `coldfuse verify` runs it again to check a published one bit for bit.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    apply_server_optimizer, dir::write_dir, fuse_dir, FuseOptions, FusionConfig, FusionError,
    FusionReport, RunningSum, ServerOptimizer,
};
use crate::{
    api::SyncMode,
    diff::{BaseInfo, DiffManifest, DiffReader, BASE_WEIGHTS},
    tensorfile::ByteSource,
};

/// One accepted diff as the fusion takes it.
#[derive(Debug, Clone)]
pub struct RecordedDiff {
    /// The diff file (with `source`, only its name in messages).
    pub path: PathBuf,
    /// Where to read it instead of `path` (a diff streamed from the store).
    pub source: Option<Arc<dyn ByteSource>>,
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
    /// The order they were summed in (contributor ids) when the round was closed from a running
    /// sum; None: the canonical order.
    pub fold_order: Option<&'a [String]>,
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
    let base = parent(inputs)?;
    let readers = open_diffs(inputs, &base)?;
    let options = FuseOptions {
        order: inputs.fold_order.map(<[String]>::to_vec),
        ..FuseOptions::default()
    };
    let report = fuse_dir(&base, &readers, inputs.fusion, out, &options)?;
    // Every tensor any diff covers (a partial diff is zeros elsewhere), in the base's order.
    let covered: Vec<String> = base
        .file
        .header
        .names()
        .filter(|n| readers.iter().any(|r| r.tensor(n).is_some()))
        .map(str::to_string)
        .collect();
    optimize(inputs, &base, report, &covered, out, state_out)
}

/// Closes a round from its running sum and `inputs.diffs` (those not folded yet, folded during the
/// closing pass in the order given): the same model directory and state as [`replay`] of all of them
/// with `fold_order` = [`RunningSum::order`] followed by `inputs.diffs`' contributors
/// (`inputs.fold_order` is not read; the sum's diffs were opened against the parent and scaled for
/// their staleness when they were folded, and so are these).
pub fn replay_sum(
    inputs: &ReplayInputs<'_>,
    sum: &RunningSum,
    out: &Path,
    state_out: &Path,
) -> Result<Replayed, FusionError> {
    let base = parent(inputs)?;
    let last = open_diffs(inputs, &base)?;
    let report = write_dir(&base, out, |weights| {
        sum.finish(
            &last,
            &base,
            inputs.fusion,
            weights,
            &FuseOptions::default(),
        )
    })?;
    optimize(
        inputs,
        &base,
        report,
        &sum.covered(&last, &base),
        out,
        state_out,
    )
}

/// Opens `inputs.diffs` against the parent `base`, each scaled for its staleness.
fn open_diffs(inputs: &ReplayInputs<'_>, base: &BaseInfo) -> Result<Vec<DiffReader>, FusionError> {
    inputs
        .diffs
        .iter()
        .map(|d| {
            // A stale diff (asynchronous mode) is checked against the parent's layout and scaled down.
            let mut manifest = d.manifest.clone();
            manifest.base.sha256 = inputs.parent_sha256.to_string();
            match &d.source {
                Some(source) => DiffReader::open_source(&d.path, source.clone(), manifest, base),
                None => DiffReader::open(&d.path, manifest, base),
            }
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
        .collect()
}

fn parent(inputs: &ReplayInputs<'_>) -> Result<BaseInfo, FusionError> {
    BaseInfo::open_with_sha256(inputs.parent_dir, inputs.parent_sha256.to_string())
        .map_err(|e| FusionError::Config(format!("parent base: {e}")))
}

/// Applies the server optimiser (if any) over the `covered` tensors of the fused weights in `out`.
fn optimize(
    inputs: &ReplayInputs<'_>,
    base: &BaseInfo,
    report: FusionReport,
    covered: &[String],
    out: &Path,
    state_out: &Path,
) -> Result<Replayed, FusionError> {
    if !inputs.optimizer.is_none() {
        apply_server_optimizer(
            inputs.optimizer,
            &base.file,
            &out.join(BASE_WEIGHTS),
            covered,
            inputs.prev_state,
            state_out,
        )?;
    }
    Ok(Replayed {
        report,
        architecture: base.architecture.name.to_string(),
    })
}
