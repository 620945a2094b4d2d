//! Contributions as seen through the API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The outcome of validating a contribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    /// Validated and counted towards the round.
    Accepted {
        /// Global L2 norm of the diff.
        l2_norm: f64,
        /// Unix time.
        at: u64,
    },
    /// Refused; nothing of it is fused.
    Rejected {
        /// Machine-readable reason (e.g. `wrong_base`, `non_finite`).
        reason: super::ErrorCode,
        /// Human-readable explanation.
        message: String,
        /// Unix time.
        at: u64,
    },
}

impl Verdict {
    /// Whether the contribution was accepted.
    pub fn accepted(&self) -> bool {
        matches!(self, Self::Accepted { .. })
    }
}

/// An accepted contribution taken out of its round before fusion (`rounds/{i}/{id}/quarantine.json`):
/// by an admin, because its token was revoked, or because fusing it failed. It is never fused, and the
/// record stays beside its accepted verdict so every acknowledged contribution is accounted for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Quarantine {
    /// Machine-readable reason: `dropped` (admin), `revoked` (token revoked), `fusion_failed`.
    pub reason: String,
    /// Human-readable explanation.
    pub message: String,
    /// Unix time.
    pub at: u64,
}

/// The answer to announcing a contribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Announced {
    /// The iteration the contribution is for.
    pub iteration: u64,
    /// Contributor id.
    pub contributor: String,
    /// Where to `PUT` the diff file.
    pub upload_url: String,
    /// Maximum accepted diff size in bytes.
    pub max_bytes: u64,
}

/// A contribution's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ContributionStatus {
    /// The iteration it is for.
    pub iteration: u64,
    /// Contributor id.
    pub contributor: String,
    /// SHA-256 of the diff (from the manifest).
    pub diff_sha256: String,
    /// None while waiting for the upload.
    pub verdict: Option<Verdict>,
    /// Bytes of the diff the coordinator holds once each request ends, durably (resume an
    /// interrupted upload from here); bytes of a request still running are not counted yet.
    #[serde(default)]
    pub received_bytes: u64,
    /// The coordinator's signed receipt, once the diff is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<super::SignedReceipt>,
    /// Set when the contribution was taken out of the round before fusion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<Quarantine>,
}
