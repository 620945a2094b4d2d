//! Published bases and their lineage.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One file of a published base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    /// File name inside the base directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// What a published base consists of (served at `/v1/bases/{iteration}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BaseManifest {
    /// Iteration number (0 = the original model).
    pub iteration: u64,
    /// SHA-256 of `model.safetensors` (what contributions name as their base).
    pub base_sha256: String,
    /// Architecture (`bert`, `roberta`, `deberta-v2`).
    pub architecture: String,
    /// Every file with its size and hash.
    pub files: Vec<FileEntry>,
    /// Unix time of publication.
    pub created_at: u64,
}

impl BaseManifest {
    /// The entry for file `name`.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// One fused contribution as recorded in lineage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LineageContribution {
    /// Contributor id (omitted for anonymous readers).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub contributor: String,
    /// SHA-256 of the diff file.
    pub diff_sha256: String,
    /// Examples it was trained on (omitted for anonymous readers).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_examples: u64,
    /// Its weight in the fusion.
    pub weight: f64,
    /// Factor applied: norm clipping × staleness scale.
    pub clip_factor: f32,
    /// Iterations between the diff's base and the base it was fused into (0 when synchronous).
    #[serde(default)]
    pub staleness: u64,
    /// Its local metrics (omitted for anonymous readers).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub metrics: std::collections::BTreeMap<String, f64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The lineage record of one iteration; writing it (create-only) is what commits the iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IterationRecord {
    /// Iteration number.
    pub iteration: u64,
    /// The iteration it was fused from (None for iteration 0).
    pub parent: Option<u64>,
    /// SHA-256 of the parent's weights.
    pub parent_sha256: Option<String>,
    /// SHA-256 of this base's weights.
    pub base_sha256: String,
    /// Fusion strategy and parameters (None for iteration 0).
    #[schema(value_type = Object)]
    pub fusion: Option<crate::fusion::FusionConfig>,
    /// Contributions fused into it.
    pub contributions: Vec<LineageContribution>,
    /// Global L2 norm of the update.
    pub update_l2_norm: Option<f64>,
    /// The server optimiser applied after fusing (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub server_optimizer: Option<crate::fusion::ServerOptimizer>,
    /// SHA-256 of the server-optimiser state after this iteration (when one is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_state_sha256: Option<String>,
    /// The order the contributions were summed in (contributor ids), when the round was closed from
    /// a running sum (f64 sums depend on it); absent: ascending diff hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold_order: Option<Vec<String>>,
    /// Where iteration 0 came from (e.g. the original model's directory name).
    pub origin: Option<String>,
    /// coldfuse version that produced it.
    pub created_by: String,
    /// Unix time of the commit.
    pub created_at: u64,
}

impl IterationRecord {
    /// The record as an anonymous reader sees it: which sites contributed, with how much data and
    /// how well they did locally, is per-site information; hashes, weights and clip factors (all a
    /// replay needs besides the diffs, which need a token anyway) stay.
    pub fn redacted(mut self) -> Self {
        for c in &mut self.contributions {
            c.contributor.clear();
            c.num_examples = 0;
            c.metrics.clear();
        }
        // The fold order names the sites too (a replay needs it, and a token for the diffs).
        self.fold_order = None;
        self
    }
}

/// The `latest` pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LatestPointer {
    /// The iteration served as latest.
    pub iteration: u64,
    /// Set by an admin rollback to the newest committed iteration at that time: `latest` deliberately
    /// trails it. Otherwise (or once a later iteration is committed) a pointer behind the newest
    /// commit is a crash between commit and switch, and a restart rolls it forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_at: Option<u64>,
}

impl LatestPointer {
    /// The pointer a commit or promotion writes.
    pub fn to(iteration: u64) -> Self {
        Self {
            iteration,
            rolled_back_at: None,
        }
    }
}
