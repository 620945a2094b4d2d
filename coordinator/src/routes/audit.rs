//! The evidence behind a committed iteration, for `coldfuse verify`: each fused contribution's manifest
//! and diff, and the server-optimiser state. Diffs carry information about a site's data, so a diff and
//! its manifest are read only by admins, auditors and the site that sent it; the optimiser state (an
//! aggregate) by any token.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
    Json,
};
use coldfuse_shared::{
    api::{keys, IterationRecord},
    diff::{DiffManifest, DIFF_FILE, MANIFEST_FILE},
};

use crate::{auth, ApiError, Coordinator};

/// The committed record of `iteration`, once the caller holds a token.
async fn record(
    c: &Coordinator,
    headers: &HeaderMap,
    iteration: u64,
) -> Result<IterationRecord, ApiError> {
    auth::require_token(c, headers).await?;
    c.store
        .get_json(&keys::iteration_record(iteration))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("iteration {iteration} is not committed")))
}

/// The record, checked to have fused `contributor`, once the caller may read that site's diffs.
async fn fused(
    c: &Coordinator,
    headers: &HeaderMap,
    iteration: u64,
    contributor: &str,
) -> Result<IterationRecord, ApiError> {
    auth::require_site_reader(c, headers, contributor).await?;
    let r = record(c, headers, iteration).await?;
    if !r.contributions.iter().any(|x| x.contributor == contributor) {
        return Err(ApiError::not_found(format!(
            "iteration {iteration} fused no contribution of `{contributor}`"
        )));
    }
    Ok(r)
}

async fn stream(c: &Coordinator, key: &str) -> Result<Response, ApiError> {
    let (size, body) = c.store.get_stream(key, None).await?;
    let mut response = Body::from_stream(body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Ok(response)
}

/// `GET /v1/lineage/{iteration}/contributions/{contributor}/manifest`: a fused diff's manifest.
#[utoipa::path(get, path = "/v1/lineage/{iteration}/contributions/{contributor}/manifest", params(("iteration" = u64, Path), ("contributor" = String, Path)), responses((status = 200, body = Object), (status = 401), (status = 404)))]
pub async fn diff_manifest(
    State(c): State<Arc<Coordinator>>,
    Path((iteration, contributor)): Path<(u64, String)>,
    headers: HeaderMap,
) -> Result<Json<DiffManifest>, ApiError> {
    fused(&c, &headers, iteration, &contributor).await?;
    c.store
        .get_json(&keys::contribution_file(
            iteration,
            &contributor,
            MANIFEST_FILE,
        ))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no manifest of `{contributor}`")))
}

/// `GET /v1/lineage/{iteration}/contributions/{contributor}/diff`: a fused diff file.
#[utoipa::path(get, path = "/v1/lineage/{iteration}/contributions/{contributor}/diff", params(("iteration" = u64, Path), ("contributor" = String, Path)), responses((status = 200), (status = 401), (status = 404)))]
pub async fn diff(
    State(c): State<Arc<Coordinator>>,
    Path((iteration, contributor)): Path<(u64, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    fused(&c, &headers, iteration, &contributor).await?;
    stream(
        &c,
        &keys::contribution_file(iteration, &contributor, DIFF_FILE),
    )
    .await
}

/// `GET /v1/lineage/{iteration}/optimizer-state`: the server-optimiser state after `iteration`.
#[utoipa::path(get, path = "/v1/lineage/{iteration}/optimizer-state", params(("iteration" = u64, Path)), responses((status = 200), (status = 401), (status = 404)))]
pub async fn optimizer_state(
    State(c): State<Arc<Coordinator>>,
    Path(iteration): Path<u64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let r = record(&c, &headers, iteration).await?;
    if r.optimizer_state_sha256.is_none() {
        return Err(ApiError::not_found(format!(
            "iteration {iteration} has no server-optimiser state"
        )));
    }
    stream(&c, &keys::optimizer_state(iteration)).await
}
