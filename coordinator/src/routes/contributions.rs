//! Contributions: announce a manifest, upload the diff (streamed to disk, validated, then stored),
//! and read a contribution's verdict.

use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use coldfuse_shared::hash::sha256_file;
use coldfuse_shared::{
    api::{keys, now_unix, Announced, ContributionStatus, Receipt, SignedReceipt, Verdict},
    diff::{validate, BaseInfo, DiffManifest, DIFF_FILE, FORMAT_VERSION, MANIFEST_FILE},
};

use crate::{auth, state::Contribution, upload, ApiError, Coordinator};

const VERDICT: &str = "verdict.json";

/// `POST /v1/contributions`: announce a contribution to the current round with its manifest.
#[utoipa::path(post, path = "/v1/contributions", request_body(content = Object, description = "DiffManifest"),
    responses((status = 201, body = Announced), (status = 400), (status = 401), (status = 403), (status = 409), (status = 413)))]
pub async fn announce(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Announced>), ApiError> {
    let manifest = DiffManifest::from_json(&body)
        .map_err(|e| ApiError::bad_request("bad_manifest", format!("manifest JSON: {e}")))?;
    let contributor = manifest.contributor.clone();
    if !keys::valid_contributor_id(&contributor) {
        return Err(ApiError::bad_request(
            "bad_contributor",
            "contributor ids are 1-64 characters of [A-Za-z0-9._-], not starting with a dot",
        ));
    }
    auth::require_contributor(&c, &headers, &contributor).await?;
    if manifest.format_version != FORMAT_VERSION {
        return Err(ApiError::bad_request(
            "unsupported_version",
            format!(
                "manifest format {} (this coordinator reads {FORMAT_VERSION}); upgrade coldfuse",
                manifest.format_version
            ),
        ));
    }
    let mut s = c.state.write().await;
    if s.fusing {
        return Err(ApiError::conflict(
            "round_fusing",
            "the round is being fused; pull the new base and train again",
        ));
    }
    if s.staleness(&manifest.base.sha256).is_none() {
        return Err(ApiError::conflict(
            "stale_base",
            format!(
                "diff is against base {}, the current base is iteration {} ({}); pull it and train again",
                manifest.base.sha256, s.latest.iteration, s.latest.base_sha256
            ),
        ));
    }
    if manifest.diff_bytes > s.config.max_diff_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "diff of {} bytes exceeds the {}-byte limit",
                manifest.diff_bytes, s.config.max_diff_bytes
            ),
        ));
    }
    if let Some(existing) = s.round.get(&contributor) {
        if existing.verdict.as_ref().is_some_and(Verdict::accepted)
            && s.staleness(&existing.manifest.base.sha256).is_some()
        {
            return Err(ApiError::conflict(
                "duplicate",
                format!(
                    "{contributor} already has an accepted contribution to iteration {}",
                    s.round_iteration()
                ),
            ));
        }
    }
    let iteration = s.round_iteration();
    c.store
        .delete(&keys::contribution_file(iteration, &contributor, VERDICT))
        .await?;
    c.store
        .put_json(
            &keys::contribution_file(iteration, &contributor, MANIFEST_FILE),
            &manifest,
        )
        .await?;
    let max_bytes = s.config.max_diff_bytes;
    s.round.insert(
        contributor.clone(),
        Contribution {
            manifest,
            verdict: None,
        },
    );
    Ok((
        StatusCode::CREATED,
        Json(Announced {
            iteration,
            upload_url: format!("/v1/contributions/{contributor}/diff"),
            contributor,
            max_bytes,
        }),
    ))
}

/// `PUT /v1/contributions/{contributor}/diff`: upload the announced diff, whole or in `Content-Range`
/// chunks (202 with `received_bytes` until the last one); the last byte brings the verdict.
#[utoipa::path(put, path = "/v1/contributions/{contributor}/diff", params(("contributor" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = ContributionStatus), (status = 202, body = ContributionStatus), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409), (status = 413), (status = 422)))]
pub async fn upload(
    State(c): State<Arc<Coordinator>>,
    Path(contributor): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<ContributionStatus>), ApiError> {
    auth::require_contributor(&c, &headers, &contributor).await?;
    let (iteration, manifest, base_iteration) = {
        let s = c.state.read().await;
        let Some(entry) = s.round.get(&contributor) else {
            return Err(ApiError::not_found(format!(
                "no announced contribution of {contributor}; POST its manifest first"
            )));
        };
        if entry.verdict.is_some() {
            return Err(ApiError::conflict(
                "already_uploaded",
                "this contribution already has a verdict; announce again to resubmit",
            ));
        }
        if s.fusing {
            return Err(ApiError::conflict(
                "round_fusing",
                "the round is being fused; pull the new base and train again",
            ));
        }
        let Some(base_iteration) = s.bases.get(&entry.manifest.base.sha256).copied() else {
            return Err(ApiError::conflict(
                "stale_base",
                "the diff's base is not a committed base",
            ));
        };
        (s.round_iteration(), entry.manifest.clone(), base_iteration)
    };
    let total = manifest.diff_bytes;
    let chunk = upload::content_range(&headers, total)?;
    let _slot = c.uploads.take(&contributor)?;
    let spool = upload::spool_path(&c.work, iteration, &contributor, &manifest.diff_sha256);
    let status = |received_bytes| ContributionStatus {
        iteration,
        contributor: contributor.clone(),
        diff_sha256: manifest.diff_sha256.clone(),
        verdict: None,
        received_bytes,
        receipt: None,
    };
    let bytes = match chunk {
        // A whole-file upload: whatever arrives is the diff.
        None => upload::receive_at(body, &spool, 0, total).await?,
        Some(range) => {
            let have = upload::received(&spool).await;
            if range.start > have {
                return Err(upload::offset_error(have));
            }
            let size = upload::receive_at(body, &spool, range.start, range.len).await?;
            if size < total {
                return Ok((StatusCode::ACCEPTED, Json(status(size))));
            }
            size
        }
    };
    let hashed = spool.clone();
    let sha256 = tokio::task::spawn_blocking(move || sha256_file(&hashed))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    if bytes != total || sha256 != manifest.diff_sha256 {
        let _ = tokio::fs::remove_file(&spool).await;
        let verdict = reject(&c, iteration, &contributor, "integrity", format!(
            "received {bytes} bytes with sha256 {sha256}; the manifest says {total} bytes with sha256 {}",
            manifest.diff_sha256
        )).await?;
        return Err(rejection(verdict));
    }
    // The base the diff was computed against (the latest one, or an older one in asynchronous mode).
    let base_manifest: coldfuse_shared::api::BaseManifest = c
        .store
        .get_json(&keys::base_file(base_iteration, keys::BASE_MANIFEST))
        .await?
        .ok_or_else(|| {
            ApiError::internal(format!("iteration {base_iteration} has no base manifest"))
        })?;
    let base_dir = c
        .cache_base(&base_manifest)
        .await
        .map_err(ApiError::internal)?;
    let base_sha = base_manifest.base_sha256.clone();
    let path = spool.clone();
    let m = manifest.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let base = BaseInfo::open_with_sha256(&base_dir, base_sha)?;
        validate(&path, m, &base).map(|(_, stats)| stats)
    })
    .await
    .map_err(ApiError::internal)?;
    let stats = match checked {
        Ok(stats) => stats,
        Err(e) => {
            let _ = tokio::fs::remove_file(&spool).await;
            let verdict = reject(&c, iteration, &contributor, e.reason(), e.to_string()).await?;
            return Err(rejection(verdict));
        }
    };
    // Store the diff, then commit the verdict create-only: a contribution counts once it is durable.
    let key = keys::contribution_file(iteration, &contributor, DIFF_FILE);
    c.store.put_file(&key, &spool).await?;
    let _ = tokio::fs::remove_file(&spool).await;
    let verdict = Verdict::Accepted {
        l2_norm: stats.l2_norm,
        at: now_unix(),
    };
    let mut s = c.state.write().await;
    if s.round_iteration() != iteration || s.staleness(&manifest.base.sha256).is_none() {
        return Err(ApiError::conflict(
            "stale_base",
            "the base changed during the upload; pull the new base and train again",
        ));
    }
    if !c
        .store
        .create_json(
            &keys::contribution_file(iteration, &contributor, VERDICT),
            &verdict,
        )
        .await?
    {
        return Err(ApiError::conflict(
            "duplicate",
            "a verdict for this contribution already exists",
        ));
    }
    s.first_accepted_at.get_or_insert(now_unix());
    s.round.insert(
        contributor.clone(),
        Contribution {
            manifest: manifest.clone(),
            verdict: Some(verdict.clone()),
        },
    );
    drop(s);
    c.metrics.accepted(bytes);
    c.wake.notify_one();
    tracing::info!(%contributor, iteration, bytes, "contribution accepted");
    Ok((
        StatusCode::OK,
        Json(ContributionStatus {
            iteration,
            contributor,
            diff_sha256: manifest.diff_sha256.clone(),
            receipt: accepted_receipt(&c, iteration, &manifest, &verdict),
            verdict: Some(verdict),
            received_bytes: bytes,
        }),
    ))
}

async fn reject(
    c: &Coordinator,
    iteration: u64,
    contributor: &str,
    reason: &str,
    message: String,
) -> Result<Verdict, ApiError> {
    let verdict = Verdict::Rejected {
        reason: reason.to_string(),
        message,
        at: now_unix(),
    };
    c.store
        .put_json(
            &keys::contribution_file(iteration, contributor, VERDICT),
            &verdict,
        )
        .await?;
    if let Some(entry) = c.state.write().await.round.get_mut(contributor) {
        entry.verdict = Some(verdict.clone());
    }
    c.metrics.rejected(reason);
    tracing::info!(%contributor, iteration, reason, "contribution rejected");
    Ok(verdict)
}

fn rejection(verdict: Verdict) -> ApiError {
    match verdict {
        Verdict::Rejected {
            reason, message, ..
        } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, &reason, message),
        Verdict::Accepted { .. } => ApiError::internal("accepted verdict treated as a rejection"),
    }
}

/// `GET /v1/contributions/{contributor}`: the contributor's contribution to the current round.
#[utoipa::path(get, path = "/v1/contributions/{contributor}", params(("contributor" = String, Path)), responses((status = 200, body = ContributionStatus), (status = 404)))]
pub async fn status(
    State(c): State<Arc<Coordinator>>,
    Path(contributor): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ContributionStatus>, ApiError> {
    auth::require_read(&c, &headers).await?;
    let s = c.state.read().await;
    let entry = s.round.get(&contributor).ok_or_else(|| {
        ApiError::not_found(format!(
            "{contributor} has no contribution to iteration {}",
            s.round_iteration()
        ))
    })?;
    let iteration = s.round_iteration();
    let received_bytes = match entry.verdict {
        Some(_) => entry.manifest.diff_bytes,
        None => {
            let spool = upload::spool_path(
                &c.work,
                iteration,
                &contributor,
                &entry.manifest.diff_sha256,
            );
            upload::received(&spool).await
        }
    };
    let receipt = entry
        .verdict
        .as_ref()
        .and_then(|v| accepted_receipt(&c, iteration, &entry.manifest, v));
    Ok(Json(ContributionStatus {
        iteration,
        contributor,
        diff_sha256: entry.manifest.diff_sha256.clone(),
        verdict: entry.verdict.clone(),
        received_bytes,
        receipt,
    }))
}

/// The signed receipt of an accepted verdict (the same bytes every time: it is signed from the
/// stored verdict, and Ed25519 is deterministic).
fn accepted_receipt(
    c: &Coordinator,
    iteration: u64,
    manifest: &DiffManifest,
    verdict: &Verdict,
) -> Option<SignedReceipt> {
    match verdict {
        Verdict::Accepted { at, .. } => {
            Some(c.signer.sign(Receipt::accepted(iteration, manifest, *at)))
        }
        Verdict::Rejected { .. } => None,
    }
}
