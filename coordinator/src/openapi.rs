//! The OpenAPI document's fixed part (title, schemas); its paths come from the route table in
//! `routes/mod.rs`, so the router and the document cannot drift apart.

use coldfuse_shared::api::{
    Announced, ApiErrorBody, ApiErrorDetail, BaseManifest, ContributionStatus, Decision,
    DeploymentConfig, EvalMethod, FileEntry, GateConfig, GateEval, GateStatus, IterationRecord,
    LatestPointer, LineageContribution, Promotion, PromotionState, Quarantine, Receipt,
    ReceiptKind, Role, RoundStatus, SignedReceipt, SigningPublicKey, SyncMode, TokenRecord,
    TokenRequest, TokenResponse, Verdict, WhoAmI,
};

use crate::routes;

/// The API description.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "coldfuse coordinator",
        description = "ColD Fusion: contributors upload body diffs; the coordinator fuses them into the next shared base."
    ),
    components(schemas(
        Announced,
        ApiErrorBody,
        ApiErrorDetail,
        BaseManifest,
        ContributionStatus,
        DeploymentConfig,
        FileEntry,
        IterationRecord,
        LatestPointer,
        LineageContribution,
        Receipt,
        ReceiptKind,
        Role,
        RoundStatus,
        SignedReceipt,
        SigningPublicKey,
        SyncMode,
        TokenRecord,
        TokenRequest,
        TokenResponse,
        Verdict,
        WhoAmI,
        routes::admin::Rollback,
        routes::admin::DropRequest,
        Quarantine,
        GateStatus,
        Decision,
        EvalMethod,
        GateConfig,
        GateEval,
        Promotion,
        PromotionState,
    ))
)]
pub struct ApiDoc;
