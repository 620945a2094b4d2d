//! Deployment settings and access tokens.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::fusion::{FusionConfig, ServerOptimizer};

/// Whether diffs must be against the current base (the paper) or may be a few iterations old.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SyncMode {
    /// Only diffs against the current `latest` base are accepted; others are stale (the paper).
    #[default]
    Synchronous,
    /// FedBuff-style: a diff against a base τ ≤ `max_staleness` iterations older than `latest` is
    /// accepted and fused into the current base scaled by 1/√(1+τ) (τ counted at fusion time).
    Asynchronous {
        /// Largest accepted staleness τ in iterations.
        max_staleness: u64,
    },
}

impl SyncMode {
    /// The largest accepted staleness (0 when synchronous).
    pub fn max_staleness(&self) -> u64 {
        match self {
            Self::Synchronous => 0,
            Self::Asynchronous { max_staleness } => *max_staleness,
        }
    }

    /// The factor a diff of staleness `tau` is scaled by: 1/√(1+τ).
    pub fn staleness_scale(tau: u64) -> f32 {
        1.0 / ((1 + tau) as f32).sqrt()
    }
}

/// Default bound on a diff's L2 norm, as a fraction of the base body's L2 norm: fine-tuning moves
/// an encoder by well under 1% of its norm, so half of it is far above any honest diff and far below
/// what wrecks a base (see ARCHITECTURE.md, "Threat model").
pub const DEFAULT_MAX_RELATIVE_NORM: f64 = 0.5;

/// Default K of [`DeploymentConfig::exclude_above_median`]: a diff whose L2 norm is above 4 × the
/// median of the round's accepted norms is left out of the fusion.
pub const DEFAULT_EXCLUDE_ABOVE_MEDIAN: f64 = 4.0;

/// Default K of [`FusionConfig::cap_examples_to_median`] for new deployments: under `weighted`, no
/// site counts for more than 4 × the median example count.
pub const DEFAULT_CAP_EXAMPLES_TO_MEDIAN: f64 = 4.0;

fn default_max_relative_norm() -> Option<f64> {
    Some(DEFAULT_MAX_RELATIVE_NORM)
}

fn default_exclude_above_median() -> Option<f64> {
    Some(DEFAULT_EXCLUDE_ABOVE_MEDIAN)
}

/// Settings of one deployment, stored at `deployment.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Fusion strategy and clipping.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub fusion: FusionConfig,
    /// Accepted contributions that trigger a fusion at once.
    pub quorum: usize,
    /// Fewest accepted contributions fused at the deadline.
    pub min_contributions: usize,
    /// Seconds after a round's first accepted contribution at which it is fused if it has at least
    /// `min_contributions` (None: wait for the quorum).
    pub deadline_secs: Option<u64>,
    /// Largest accepted diff file in bytes.
    pub max_diff_bytes: u64,
    /// Diffs whose L2 norm exceeds this fraction of the base body's L2 norm are rejected
    /// (`norm_bound`); null disables the bound. Default [`DEFAULT_MAX_RELATIVE_NORM`].
    #[serde(default = "default_max_relative_norm")]
    pub max_relative_norm: Option<f64>,
    /// At fusion, accepted diffs whose L2 norm exceeds K × the median of the round's accepted
    /// norms are quarantined (`norm_outlier`) and the rest fused; null disables it. Default
    /// [`DEFAULT_EXCLUDE_ABOVE_MEDIAN`].
    #[serde(default = "default_exclude_above_median")]
    pub exclude_above_median: Option<f64>,
    /// Whether bases, lineage and round status can be read without a token.
    pub public_read: bool,
    /// Staleness policy.
    #[serde(default)]
    pub mode: SyncMode,
    /// Server-side optimiser over the fused update (default none: base + update, the paper).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub server_optimizer: ServerOptimizer,
    /// Promotion gate: fused bases wait for held-out evals before becoming `latest` (absent: no gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<super::GateConfig>,
}

impl DeploymentConfig {
    /// Checks the fusion strategy, the server optimiser and the gate.
    pub fn validate(&self) -> Result<(), String> {
        self.fusion.validate().map_err(|e| e.to_string())?;
        for (name, value) in [
            ("max_relative_norm", self.max_relative_norm),
            ("exclude_above_median", self.exclude_above_median),
        ] {
            if let Some(r) = value.filter(|r| !(r.is_finite() && *r > 0.0)) {
                return Err(format!("{name} must be a positive number, got {r}"));
            }
        }
        self.server_optimizer
            .validate()
            .map_err(|e| e.to_string())?;
        match &self.gate {
            Some(gate) => gate.validate(),
            None => Ok(()),
        }
    }
}

impl Default for DeploymentConfig {
    fn default() -> Self {
        Self {
            fusion: FusionConfig {
                cap_examples_to_median: Some(DEFAULT_CAP_EXAMPLES_TO_MEDIAN),
                ..FusionConfig::default()
            },
            quorum: 3,
            min_contributions: 1,
            deadline_secs: None,
            max_diff_bytes: 8 << 30,
            max_relative_norm: default_max_relative_norm(),
            exclude_above_median: default_exclude_above_median(),
            public_read: true,
            mode: SyncMode::Synchronous,
            server_optimizer: ServerOptimizer::None,
            gate: None,
        }
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including admin routes.
    Admin,
    /// Read, and write its own contributions.
    Contributor,
    /// Read only.
    Reader,
    /// Read only, including every fused diff and its manifest (to run `coldfuse verify` on any
    /// iteration); contributor tokens read only their own diffs.
    Auditor,
}

/// A token as stored (under the hash of the token; the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenRecord {
    /// Short public id of the token (for listing and revoking).
    pub id: String,
    /// Its role.
    pub role: Role,
    /// The contributor id it may write as (contributor tokens).
    pub contributor: Option<String>,
    /// Unix time of creation.
    pub created_at: u64,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// Request to create a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// Role of the new token.
    pub role: Role,
    /// Contributor id (required for contributor tokens).
    pub contributor: Option<String>,
}

/// A newly created token: shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// The bearer token (store it; it cannot be shown again).
    pub token: String,
    /// Its record.
    pub record: TokenRecord,
}

/// Who a token belongs to (served at `/v1/whoami`; no token: anonymous).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// The token's role (None for an anonymous caller).
    pub role: Option<Role>,
    /// The contributor id it writes as (contributor tokens).
    pub contributor: Option<String>,
    /// The token's public id.
    pub token_id: Option<String>,
}
