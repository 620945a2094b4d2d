//! Admin routes: force a fusion, change settings, roll `latest` back, create and revoke tokens.

use std::{collections::HashMap, sync::Arc};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use coldfuse_shared::api::{
    keys, now_unix, BaseManifest, DeploymentConfig, ErrorCode, IterationRecord, LatestPointer,
    Promotion, PromotionState, Quarantine, Role, TokenRecord, TokenRequest, TokenResponse,
};

use crate::{
    auth,
    fusion_task::fuse_round,
    quarantine::{quarantine, Why},
    ApiError, Coordinator,
};

/// `POST /v1/admin/fuse[?wait=true]`: fuse the current round now (needs one accepted contribution).
#[utoipa::path(post, path = "/v1/admin/fuse", params(("wait" = Option<bool>, Query)),
    responses((status = 200, body = IterationRecord), (status = 202), (status = 401), (status = 403), (status = 409)))]
pub async fn fuse(
    State(c): State<Arc<Coordinator>>,
    _admin: auth::Admin,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(p) = &c.state.read().await.candidate {
        return Err(ApiError::conflict(
            ErrorCode::CandidatePending,
            format!(
                "iteration {} awaits the promotion gate; promote or discard it first",
                p.iteration
            ),
        ));
    }
    if c.state.read().await.accepted().is_empty() {
        return Err(ApiError::conflict(
            ErrorCode::NothingToFuse,
            "the round has no accepted contribution",
        ));
    }
    if q.get("wait").is_some_and(|w| w == "true") {
        // On its own task: a client that hangs up does not cancel the fusion half-way.
        let runner = c.clone();
        let record = tokio::spawn(async move { fuse_round(&runner, true).await })
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::internal(format!("fusion failed, nothing published: {e:#}")))?
            .ok_or_else(|| {
                ApiError::conflict(
                    ErrorCode::NothingToFuse,
                    "a fusion is already running, or no accepted contribution is left",
                )
            })?;
        return Ok(Json(record).into_response());
    }
    let runner = c.clone();
    tokio::spawn(async move {
        if let Err(e) = fuse_round(&runner, true).await {
            tracing::error!(error = %format!("{e:#}"), "forced fusion failed");
            runner.metrics.fusion_failed();
        }
    });
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /v1/admin/config`: the deployment settings.
#[utoipa::path(get, path = "/v1/admin/config", responses((status = 200, body = DeploymentConfig), (status = 401), (status = 403)))]
pub async fn get_config(
    State(c): State<Arc<Coordinator>>,
    _admin: auth::Admin,
) -> Result<Json<DeploymentConfig>, ApiError> {
    Ok(Json(c.config().await))
}

/// `PUT /v1/admin/config`: replace the deployment settings (strategy, quorum, deadline, limits).
#[utoipa::path(put, path = "/v1/admin/config", request_body = DeploymentConfig, responses((status = 200, body = DeploymentConfig), (status = 400)))]
pub async fn set_config(
    State(c): State<Arc<Coordinator>>,
    _admin: auth::Admin,
    body: Bytes,
) -> Result<Json<DeploymentConfig>, ApiError> {
    let config: DeploymentConfig = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(ErrorCode::BadConfig, e.to_string()))?;
    config
        .validate()
        .map_err(|e| ApiError::bad_request(ErrorCode::BadConfig, e))?;
    if config.quorum == 0 || config.min_contributions == 0 {
        return Err(ApiError::bad_request(
            ErrorCode::BadConfig,
            "quorum and min_contributions must be at least 1",
        ));
    }
    c.store.put_json(keys::DEPLOYMENT, &config).await?;
    c.state.write().await.config = config.clone();
    c.wake.notify_one();
    Ok(Json(config))
}

/// The body of a rollback.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct Rollback {
    /// The committed iteration to serve as latest.
    pub iteration: u64,
}

/// `POST /v1/admin/rollback`: serve an earlier committed iteration as latest (the paper's
/// backtracking); the next round builds on it.
#[utoipa::path(post, path = "/v1/admin/rollback", request_body = Rollback, responses((status = 200, body = LatestPointer), (status = 404), (status = 409)))]
pub async fn rollback(
    State(c): State<Arc<Coordinator>>,
    _admin: auth::Admin,
    body: Bytes,
) -> Result<Json<LatestPointer>, ApiError> {
    let Rollback { iteration } = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(ErrorCode::BadRequest, e.to_string()))?;
    let _serial = c.fusion_lock.lock().await;
    if c.store
        .get_json::<IterationRecord>(&keys::iteration_record(iteration))
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!(
            "iteration {iteration} is not committed"
        )));
    }
    if let Some(p) = c
        .store
        .get_json::<Promotion>(&keys::gate_record(iteration))
        .await?
    {
        if p.state != PromotionState::Promoted {
            return Err(ApiError::conflict(
                ErrorCode::Gated,
                format!(
                    "iteration {iteration} is {:?} at the promotion gate; decide it with \
                     /v1/admin/gate/{iteration}/promote instead",
                    p.state
                ),
            ));
        }
    }
    let manifest: BaseManifest = c
        .store
        .get_json(&keys::base_file(iteration, keys::BASE_MANIFEST))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("iteration {iteration} has no base")))?;
    c.cache_base(&manifest).await.map_err(ApiError::internal)?;
    let pointer = LatestPointer {
        iteration,
        rolled_back_at: Some(c.state.read().await.committed),
    };
    c.store.put_json(keys::LATEST, &pointer).await?;
    let mut s = c.state.write().await;
    s.latest = manifest;
    s.first_accepted_at = None;
    tracing::warn!(iteration, "latest rolled back");
    Ok(Json(pointer))
}

/// `POST /v1/admin/tokens`: create a token (shown once in the answer).
#[utoipa::path(post, path = "/v1/admin/tokens", request_body = TokenRequest, responses((status = 201, body = TokenResponse), (status = 400)))]
pub async fn create_token(
    State(c): State<Arc<Coordinator>>,
    _admin: auth::Admin,
    body: Bytes,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let request: TokenRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(ErrorCode::BadRequest, e.to_string()))?;
    match (&request.role, &request.contributor) {
        (Role::Contributor, Some(id)) if keys::valid_contributor_id(id) => {}
        (Role::Contributor, _) => {
            return Err(ApiError::bad_request(
                ErrorCode::BadContributor,
                "contributor tokens need a `contributor` id of [A-Za-z0-9._-]",
            ))
        }
        _ => {}
    }
    let (token, hash) = auth::new_token();
    let record = TokenRecord {
        id: hash[..12].to_string(),
        role: request.role,
        contributor: request.contributor,
        created_at: now_unix(),
        revoked: false,
    };
    c.store
        .put_private_json(&keys::token(&hash), &record)
        .await?;
    c.remember_token(hash, record.clone()).await;
    Ok((StatusCode::CREATED, Json(TokenResponse { token, record })))
}

/// `DELETE /v1/admin/tokens/{id}`: revoke a token.
#[utoipa::path(delete, path = "/v1/admin/tokens/{id}", params(("id" = String, Path)), responses((status = 200, body = TokenRecord), (status = 404)))]
pub async fn revoke_token(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
    _admin: auth::Admin,
) -> Result<Json<TokenRecord>, ApiError> {
    // On its own task: an admin who hangs up cannot leave the store and memory disagreeing.
    tokio::spawn(revoke(c, id))
        .await
        .map_err(ApiError::internal)?
}

/// Marks the token revoked (store, then memory) and quarantines its contributor's contribution to the
/// open round; while a fusion runs, that happens before the next fusion attempt takes its snapshot.
async fn revoke(c: Arc<Coordinator>, id: String) -> Result<Json<TokenRecord>, ApiError> {
    let (hash, mut record) = c
        .token_hash_by_id(&id)
        .await
        .ok_or_else(|| ApiError::not_found(format!("no token with id {id}")))?;
    record.revoked = true;
    c.store
        .put_private_json(&keys::token(&hash), &record)
        .await?;
    c.remember_token(hash, record.clone()).await;
    if let Some(contributor) = record.contributor.as_deref() {
        let mut s = c.state.write().await;
        if s.fusing.get() {
            tracing::warn!(
                %contributor,
                "token revoked while a fusion runs: its contribution, if in that fusion, stays; \
                 else it is quarantined before the next attempt"
            );
            c.defer_revocation(contributor);
        } else {
            let message = format!("token {id} was revoked");
            quarantine(&c, &mut s, contributor, Why::Revoked, message).await?;
        }
    }
    Ok(Json(record))
}

/// The body of a drop.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
pub struct DropRequest {
    /// Why (kept in the quarantine record).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/admin/contributions/{contributor}/drop`: quarantine a contribution to the open round so
/// it is not fused (409 while a fusion runs).
#[utoipa::path(post, path = "/v1/admin/contributions/{contributor}/drop", params(("contributor" = String, Path)), request_body = DropRequest,
    responses((status = 200, body = Quarantine), (status = 401), (status = 403), (status = 404), (status = 409)))]
pub async fn drop_contribution(
    State(c): State<Arc<Coordinator>>,
    Path(contributor): Path<String>,
    auth::Admin(admin): auth::Admin,
    body: Bytes,
) -> Result<Json<Quarantine>, ApiError> {
    let request: DropRequest = if body.is_empty() {
        DropRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(ErrorCode::BadRequest, e.to_string()))?
    };
    let reason = request.reason.unwrap_or_default();
    if reason.len() > 1024 {
        return Err(ApiError::bad_request(
            ErrorCode::BadRequest,
            "reason is limited to 1024 bytes",
        ));
    }
    // On its own task: an admin who hangs up cannot leave the store and memory disagreeing.
    let message = format!("dropped by admin token {}: {reason}", admin.id);
    tokio::spawn(async move {
        let mut s = c.state.write().await;
        if s.fusing.get() {
            return Err(ApiError::conflict(
                ErrorCode::RoundFusing,
                "the round is being fused; drop contributions before or after",
            ));
        }
        quarantine(&c, &mut s, &contributor, Why::Dropped, message)
            .await?
            .map(Json)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "{contributor} has no contribution in the open round"
                ))
            })
    })
    .await
    .map_err(ApiError::internal)?
}
