//! The OpenAPI document served at `/v1/openapi.json`.

use coldfuse_shared::api::{
    Announced, ApiErrorBody, ApiErrorDetail, BaseManifest, ContributionStatus, DeploymentConfig,
    EvalMethod, FileEntry, GateConfig, GateEval, IterationRecord, LatestPointer,
    LineageContribution, Promotion, PromotionState, Quarantine, Receipt, ReceiptKind, Role,
    RoundStatus, SignedReceipt, SigningPublicKey, SyncMode, TokenRecord, TokenRequest,
    TokenResponse, Verdict, WhoAmI,
};

use crate::routes;

/// The API description.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "coldfuse coordinator",
        description = "ColD Fusion: contributors upload body diffs; the coordinator fuses them into the next shared base."
    ),
    paths(
        routes::ops::healthz,
        routes::ops::metrics,
        routes::ops::round,
        routes::ops::whoami,
        routes::bases::latest,
        routes::bases::manifest,
        routes::bases::file,
        routes::bases::archive,
        routes::bases::lineage,
        routes::bases::lineage_one,
        routes::audit::diff_manifest,
        routes::audit::diff,
        routes::audit::optimizer_state,
        routes::receipts::signing_key,
        routes::gate::status,
        routes::gate::record,
        routes::gate::report,
        routes::gate::promote,
        routes::gate::discard,
        routes::receipts::fused_receipt,
        routes::contributions::announce,
        routes::contributions::upload,
        routes::contributions::status,
        routes::admin::fuse,
        routes::admin::set_config,
        routes::admin::rollback,
        routes::admin::create_token,
        routes::admin::revoke_token,
        routes::admin::drop_contribution,
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
        routes::gate::GateStatus,
        routes::gate::Decision,
        EvalMethod,
        GateConfig,
        GateEval,
        Promotion,
        PromotionState,
    ))
)]
pub struct ApiDoc;
