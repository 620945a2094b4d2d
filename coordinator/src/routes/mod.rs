//! The HTTP API: one file per group of routes, all over a shared `Arc<Coordinator>`.

pub mod admin;
pub mod audit;
pub mod bases;
pub mod contributions;
pub mod gate;
pub mod ops;
pub mod receipts;

use std::sync::Arc;

use axum::{
    routing::{delete, get, post, put},
    Router,
};

use crate::Coordinator;

/// The coordinator's router.
pub fn router(c: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/openapi.json", get(ops::openapi))
        .route("/v1/round", get(ops::round))
        .route("/v1/whoami", get(ops::whoami))
        .route("/v1/bases/latest", get(bases::latest))
        .route("/v1/bases/{iteration}", get(bases::manifest))
        .route("/v1/bases/{iteration}/files/{name}", get(bases::file))
        .route("/v1/bases/{iteration}/archive", get(bases::archive))
        .route("/v1/lineage", get(bases::lineage))
        .route("/v1/lineage/{iteration}", get(bases::lineage_one))
        .route(
            "/v1/lineage/{iteration}/contributions/{contributor}/manifest",
            get(audit::diff_manifest),
        )
        .route(
            "/v1/lineage/{iteration}/contributions/{contributor}/diff",
            get(audit::diff),
        )
        .route(
            "/v1/lineage/{iteration}/contributions/{contributor}/receipt",
            get(receipts::fused_receipt),
        )
        .route("/v1/signing-key", get(receipts::signing_key))
        .route(
            "/v1/lineage/{iteration}/optimizer-state",
            get(audit::optimizer_state),
        )
        .route("/v1/contributions", post(contributions::announce))
        .route(
            "/v1/contributions/{contributor}",
            get(contributions::status),
        )
        .route(
            "/v1/contributions/{contributor}/diff",
            put(contributions::upload),
        )
        .route("/v1/gate", get(gate::status))
        .route("/v1/gate/{iteration}", get(gate::record))
        .route("/v1/admin/gate/{iteration}/evals", post(gate::report))
        .route("/v1/admin/gate/{iteration}/promote", post(gate::promote))
        .route("/v1/admin/gate/{iteration}/discard", post(gate::discard))
        .route("/v1/admin/fuse", post(admin::fuse))
        .route(
            "/v1/admin/config",
            get(admin::get_config).put(admin::set_config),
        )
        .route("/v1/admin/rollback", post(admin::rollback))
        .route("/v1/admin/tokens", post(admin::create_token))
        .route("/v1/admin/tokens/{id}", delete(admin::revoke_token))
        .route(
            "/v1/admin/contributions/{contributor}/drop",
            post(admin::drop_contribution),
        )
        .with_state(c)
}
