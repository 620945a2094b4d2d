//! Receipts: the coordinator's public receipt key, and the signed receipt of a fused contribution
//! (accepted receipts come with the verdict, from the upload and `GET /v1/contributions/{id}`).

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    Json,
};
use coldfuse_shared::{
    api::{keys, IterationRecord, Receipt, SignedReceipt, SigningPublicKey},
    diff::{DiffManifest, MANIFEST_FILE},
};

use crate::{auth, ApiError, Coordinator};

/// `GET /v1/signing-key`: the public key receipts are signed with (public: it lets anyone check one).
#[utoipa::path(get, path = "/v1/signing-key", responses((status = 200, body = SigningPublicKey)))]
pub async fn signing_key(State(c): State<Arc<Coordinator>>) -> Json<SigningPublicKey> {
    Json(c.signer.public())
}

/// `GET /v1/lineage/{iteration}/contributions/{contributor}/receipt`: the signed receipt that the
/// contribution was fused into the committed iteration, with its weight and the fused base's hash.
#[utoipa::path(get, path = "/v1/lineage/{iteration}/contributions/{contributor}/receipt", params(("iteration" = u64, Path), ("contributor" = String, Path)), responses((status = 200, body = SignedReceipt), (status = 401), (status = 404)))]
pub async fn fused_receipt(
    State(c): State<Arc<Coordinator>>,
    Path((iteration, contributor)): Path<(u64, String)>,
    _reader: auth::Reader,
) -> Result<Json<SignedReceipt>, ApiError> {
    let record: IterationRecord = c
        .store
        .get_json(&keys::iteration_record(iteration))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("iteration {iteration} is not committed")))?;
    let fused = record
        .contributions
        .iter()
        .find(|x| x.contributor == contributor)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "iteration {iteration} fused no contribution of `{contributor}`"
            ))
        })?;
    let manifest: DiffManifest = c
        .store
        .get_json(&keys::contribution_file(
            iteration,
            &contributor,
            MANIFEST_FILE,
        ))
        .await?
        .ok_or_else(|| ApiError::internal(format!("the manifest of `{contributor}` is missing")))?;
    if manifest.diff_sha256 != fused.diff_sha256 {
        return Err(ApiError::internal(format!(
            "the stored manifest of `{contributor}` names another diff than the lineage record"
        )));
    }
    Ok(Json(c.signer.sign(Receipt::fused(
        &record,
        fused,
        &manifest.base.sha256,
    ))))
}
