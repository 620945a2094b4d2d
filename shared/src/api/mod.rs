//! Types shared by the coordinator's HTTP API and the contributor CLI, plus the object-store key layout.
//!
//! Everything here is plain data (serde + OpenAPI schemas); no HTTP and no storage code.

mod base;
mod card;
mod contribution;
mod deployment;
mod error_code;
mod gate;
mod gate_receipt;
pub mod keys;
mod receipt;
mod round;
pub mod routes;
pub(crate) mod site_report;

pub use base::{BaseManifest, FileEntry, IterationRecord, LatestPointer, LineageContribution};
pub use card::{front_matter, model_card, with_gate, CardOrigin, MODEL_CARD};
pub use contribution::{Announced, ContributionStatus, Quarantine, Verdict};
pub use deployment::{
    DeploymentConfig, Role, SyncMode, TokenRecord, TokenRequest, TokenResponse, WhoAmI,
    DEFAULT_EXCLUDE_ABOVE_MEDIAN, DEFAULT_MAX_RELATIVE_NORM,
};
pub use error_code::ErrorCode;
pub use gate::{Decision, EvalMethod, GateConfig, GateEval, GateStatus, Promotion, PromotionState};
pub use gate_receipt::{GateReceipt, SignedGateReceipt, GATE_RECEIPT_DOMAIN};
pub use receipt::{
    Receipt, ReceiptError, ReceiptKind, ReceiptSigner, SignedReceipt, SigningPublicKey,
    SigningSecretKey, RECEIPT_DOMAIN,
};
pub use round::{ApiErrorBody, ApiErrorDetail, RoundStatus};
pub use site_report::{ReceivedReport, ReportAnswer, SiteGate, SiteReport, SiteResult, SiteRule};

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
