//! The promotion gate over HTTP: read a candidate's state, report evals (the operator's evaluator) and
//! site reports (contributor sites), and promote or discard by hand (admin).

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::HeaderMap,
    Json,
};
use coldfuse_shared::api::{
    keys, Decision, ErrorCode, GateEval, GateStatus, Promotion, PromotionState, ReportAnswer, Role,
    SiteReport,
};

use crate::{auth, gate, ApiError, Coordinator};

/// `GET /v1/gate`: the gate's settings and the candidate awaiting it.
#[utoipa::path(get, path = "/v1/gate", operation_id = "gate_status", responses((status = 200, body = GateStatus)))]
pub async fn status(
    State(c): State<Arc<Coordinator>>,
    auth::Reader(caller): auth::Reader,
) -> Result<Json<GateStatus>, ApiError> {
    let s = c.state.read().await;
    Ok(Json(GateStatus {
        gate: s.config.gate.clone(),
        candidate: s.candidate.clone().map(|p| as_seen_by(&caller, p)),
        latest: s.latest.iteration,
    }))
}

/// The record as `caller` may see it: only admins and auditors learn which site sent which report
/// (a contributor sees its own); nobody else learns admin token ids.
fn as_seen_by(caller: &auth::Caller, p: Promotion) -> Promotion {
    match caller {
        auth::Caller::Token(t) if matches!(t.role, Role::Admin | Role::Auditor) => p,
        auth::Caller::Token(t) if t.role == Role::Contributor => {
            p.redacted_for(t.contributor.as_deref())
        }
        _ => p.redacted(),
    }
}

/// `GET /v1/gate/{iteration}`: the gate's record of a fused iteration: evals, state and why.
#[utoipa::path(get, path = "/v1/gate/{iteration}", params(("iteration" = u64, Path)), responses((status = 200, body = Promotion), (status = 404)))]
pub async fn record(
    State(c): State<Arc<Coordinator>>,
    Path(iteration): Path<u64>,
    auth::Reader(caller): auth::Reader,
) -> Result<Json<Promotion>, ApiError> {
    c.store
        .get_json(&keys::gate_record(iteration))
        .await?
        .map(|p| Json(as_seen_by(&caller, p)))
        .ok_or_else(|| ApiError::not_found(format!("iteration {iteration} was not gated")))
}

/// `POST /v1/admin/gate/{iteration}/evals`: an evaluator's held-out result for the candidate; the
/// gate decides once enough evals arrived (promoted, or held for the operator).
#[utoipa::path(post, path = "/v1/admin/gate/{iteration}/evals", params(("iteration" = u64, Path)), request_body = GateEval, responses((status = 200, body = Promotion), (status = 400), (status = 409)))]
pub async fn report(
    State(c): State<Arc<Coordinator>>,
    Path(iteration): Path<u64>,
    auth::Admin(admin): auth::Admin,
    body: Bytes,
) -> Result<Json<Promotion>, ApiError> {
    let eval: GateEval = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(ErrorCode::BadEval, e.to_string()))?;
    Ok(Json(gate::report(&c, iteration, eval, &admin.id).await?))
}

/// `POST /v1/gate/{iteration}/reports`: a contributor site's aggregate evaluation of the candidate on
/// its own data (one per contributor); the gate decides once enough reports arrived or at the
/// deadline.
#[utoipa::path(post, path = "/v1/gate/{iteration}/reports", params(("iteration" = u64, Path)), request_body = SiteReport, responses((status = 200, body = ReportAnswer), (status = 400), (status = 403), (status = 409)))]
pub async fn report_site(
    State(c): State<Arc<Coordinator>>,
    Path(iteration): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ReportAnswer>, ApiError> {
    let token = auth::require_token(&c, &headers).await?;
    let contributor = match (token.role, token.contributor) {
        (Role::Contributor, Some(contributor)) => contributor,
        _ => {
            return Err(ApiError::forbidden(
                "site reports come from contributor tokens",
            ))
        }
    };
    let report: SiteReport = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(ErrorCode::BadReport, e.to_string()))?;
    let (report, promotion) = gate::report_site(&c, iteration, report, &contributor).await?;
    Ok(Json(ReportAnswer { report, promotion }))
}

/// `POST /v1/admin/gate/{iteration}/promote`: make the candidate `latest` by hand.
#[utoipa::path(post, path = "/v1/admin/gate/{iteration}/promote", params(("iteration" = u64, Path)), request_body = Decision, responses((status = 200, body = Promotion), (status = 409)))]
pub async fn promote(
    State(c): State<Arc<Coordinator>>,
    Path(iteration): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Promotion>, ApiError> {
    decide(&c, iteration, &headers, &body, PromotionState::Promoted).await
}

/// `POST /v1/admin/gate/{iteration}/discard`: never make the candidate `latest`.
#[utoipa::path(post, path = "/v1/admin/gate/{iteration}/discard", params(("iteration" = u64, Path)), request_body = Decision, responses((status = 200, body = Promotion), (status = 409)))]
pub async fn discard(
    State(c): State<Arc<Coordinator>>,
    Path(iteration): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Promotion>, ApiError> {
    decide(&c, iteration, &headers, &body, PromotionState::Discarded).await
}

async fn decide(
    c: &Coordinator,
    iteration: u64,
    headers: &HeaderMap,
    body: &[u8],
    state: PromotionState,
) -> Result<Json<Promotion>, ApiError> {
    let admin = auth::require_admin(c, headers).await?;
    let decision: Decision = if body.is_empty() {
        Decision::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(ErrorCode::BadRequest, e.to_string()))?
    };
    Ok(Json(
        gate::decide(c, iteration, state, &admin.id, decision.reason).await?,
    ))
}
