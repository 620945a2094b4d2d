//! Round status and the error body every API error uses.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The state of the current round (served at `/v1/round`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoundStatus {
    /// The iteration this round will produce.
    pub iteration: u64,
    /// The base contributions must be computed against.
    pub base_iteration: u64,
    /// Its weights' SHA-256.
    pub base_sha256: String,
    /// Accepted contributions so far.
    pub accepted: usize,
    /// Rejected contributions so far.
    pub rejected: usize,
    /// Contributors accepted so far.
    pub contributors: Vec<String>,
    /// Accepted contributions that trigger fusion.
    pub quorum: usize,
    /// Unix time at which the round is fused if it has enough contributions.
    pub deadline: Option<u64>,
    /// Whether a fusion is running now.
    pub fusing: bool,
    /// Fusion strategy, as text.
    pub strategy: String,
    /// A fused iteration awaiting the promotion gate (contributions still go against `base_iteration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<u64>,
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiErrorBody {
    /// The error.
    pub error: ApiErrorDetail,
    /// The request's id (also in the `x-request-id` header): quote it to the operator, whose log
    /// has the details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A machine-readable code and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiErrorDetail {
    /// Stable code, e.g. `stale_base`, `unauthorized`, `non_finite`.
    pub code: super::ErrorCode,
    /// What happened and what to do.
    pub message: String,
}
