//! Health, metrics, OpenAPI, and round status.

use std::sync::Arc;

use axum::{extract::State, http::header, response::IntoResponse, Json};
use coldfuse_shared::api::{RoundStatus, WhoAmI};

use crate::{auth, ApiError, Coordinator};

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /metrics`: Prometheus text format (a token is needed where reads are private).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus metrics"), (status = 401)))]
pub async fn metrics(
    State(c): State<Arc<Coordinator>>,
    _reader: auth::Reader,
) -> Result<impl IntoResponse, ApiError> {
    let (iteration, accepted) = {
        let s = c.state.read().await;
        (s.round_iteration(), s.accepted().len())
    };
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        c.metrics.render(iteration, accepted),
    ))
}

/// `GET /v1/openapi.json`: this API's OpenAPI document (built from the route table, so every route
/// is in it).
#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(super::document().clone())
}

/// `GET /v1/round`: the current round.
#[utoipa::path(get, path = "/v1/round", responses((status = 200, body = RoundStatus)))]
pub async fn round(
    State(c): State<Arc<Coordinator>>,
    auth::Reader(caller): auth::Reader,
) -> Result<Json<RoundStatus>, ApiError> {
    let mut status = c.state.read().await.status();
    if caller == auth::Caller::Anonymous {
        // Who contributes is per-site information (the count stays).
        status.contributors.clear();
    }
    Ok(Json(status))
}

/// `GET /v1/whoami`: the caller's role and contributor id (401 for an unknown or revoked token).
#[utoipa::path(get, path = "/v1/whoami", responses((status = 200, body = WhoAmI), (status = 401)))]
pub async fn whoami(caller: auth::Caller) -> Json<WhoAmI> {
    Json(match caller {
        auth::Caller::Anonymous => WhoAmI {
            role: None,
            contributor: None,
            token_id: None,
        },
        auth::Caller::Token(t) => WhoAmI {
            role: Some(t.role),
            contributor: t.contributor,
            token_id: Some(t.id),
        },
    })
}
