//! Contributions: announce a manifest, upload the diff (streamed to the store part by part, checked
//! in the same pass), and read a contribution's verdict.
//!
//! A contribution moves announced → uploading → validating → accepted | rejected (and an accepted one
//! may be quarantined before fusion, see `quarantine.rs`). Announce and upload of one contributor are
//! serialised by its upload slot, so a manifest is never replaced under a running upload; the verdict
//! is written to the store before it is answered, under the state lock, after checking again that the
//! round is open (no fusion running), the manifest is the one validated and the token is still valid.

use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use coldfuse_shared::{
    api::{keys, now_unix, routes, Announced, ContributionStatus, Receipt, SignedReceipt, Verdict},
    diff::{check_announced, BaseInfo, DiffError, DiffManifest, DiffStats, MANIFEST_FILE},
};

use tracing::Instrument;

use crate::{auth, folding::Folder, state::Contribution, upload, ApiError, Coordinator};
use coldfuse_shared::api::ErrorCode;

/// `POST /v1/contributions`: announce a contribution to the current round with its manifest.
#[utoipa::path(post, path = "/v1/contributions", request_body(content = Object, description = "DiffManifest"),
    responses((status = 201, body = Announced), (status = 400), (status = 401), (status = 403), (status = 409), (status = 413)))]
pub async fn announce(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Announced>), ApiError> {
    let manifest = DiffManifest::from_json(&body).map_err(|e| {
        ApiError::bad_request(ErrorCode::BadManifest, format!("manifest JSON: {e}"))
    })?;
    let contributor = manifest.contributor.clone();
    if !keys::valid_contributor_id(&contributor) {
        return Err(ApiError::bad_request(
            ErrorCode::BadContributor,
            "contributor ids are 1-64 characters of [A-Za-z0-9._-], not starting with a dot",
        ));
    }
    auth::require_contributor(&c, &headers, &contributor).await?;
    manifest.check_fields().map_err(|e| match e {
        DiffError::UnsupportedVersion { .. } => ApiError::bad_request(
            ErrorCode::UnsupportedVersion,
            format!("{e}; upgrade coldfuse"),
        ),
        e => ApiError::bad_request(e.code(), e.to_string()),
    })?;
    // The rest writes the store, then memory: on its own task, so a client that hangs up cannot
    // leave one without the other.
    tokio::spawn(record_announce(c, manifest))
        .await
        .map_err(ApiError::internal)?
}

/// The announce's state change: manifest stored, old uploads discarded, round entry replaced.
async fn record_announce(
    c: Arc<Coordinator>,
    manifest: DiffManifest,
) -> Result<(StatusCode, Json<Announced>), ApiError> {
    let contributor = manifest.contributor.clone();
    let largest = check_against_base(&c, &manifest).await?;
    if manifest.diff_bytes > largest {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!(
                "diff_bytes {} exceeds the {largest} bytes any diff of these tensors can take",
                manifest.diff_bytes
            ),
        ));
    }
    // While the announce runs, no upload of this contributor can (and the other way round).
    let _slot = c.uploads.take(&contributor)?;
    // Earlier uploads go first, outside the state lock (store calls); the slot keeps uploads out.
    let round = c.state.read().await.round_iteration();
    upload::discard(&c, round, &contributor).await;
    let mut s = c.state.write().await;
    if s.fusing.get() {
        return Err(round_fusing());
    }
    if s.staleness(&manifest.base.sha256).is_none() {
        return Err(stale_base(&s, &manifest.base.sha256));
    }
    if manifest.diff_bytes > s.config.max_diff_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!(
                "diff of {} bytes exceeds the {}-byte limit",
                manifest.diff_bytes, s.config.max_diff_bytes
            ),
        ));
    }
    if let Some(existing) = s.round.get(&contributor) {
        if existing.quarantined.is_some() {
            return Err(ApiError::conflict(
                ErrorCode::Quarantined,
                format!(
                    "{contributor}'s contribution to iteration {} was quarantined; it may contribute \
                     again next round",
                    s.round_iteration()
                ),
            ));
        }
        if existing.counts() && s.staleness(&existing.manifest.base.sha256).is_some() {
            return Err(ApiError::conflict(
                ErrorCode::Duplicate,
                format!(
                    "{contributor} already has an accepted contribution to iteration {}",
                    s.round_iteration()
                ),
            ));
        }
    }
    let iteration = s.round_iteration();
    let file = |name| keys::contribution_file(iteration, &contributor, name);
    c.store.delete(&file(keys::VERDICT)).await?;
    c.store.put_json(&file(MANIFEST_FILE), &manifest).await?;
    let max_bytes = s.config.max_diff_bytes;
    s.round.insert(
        contributor.clone(),
        Contribution {
            manifest,
            verdict: None,
            quarantined: None,
        },
    );
    Ok((
        StatusCode::CREATED,
        Json(Announced {
            iteration,
            upload_url: routes::contribution_diff(&contributor),
            contributor,
            max_bytes,
        }),
    ))
}

/// Checks the manifest against the base it names (tensors, shapes, dtypes, architecture) before any
/// byte is uploaded; answers the largest diff file it can describe. 409 `stale_base` when the base is
/// not one contributions are taken against.
async fn check_against_base(c: &Coordinator, manifest: &DiffManifest) -> Result<u64, ApiError> {
    let base_iteration = {
        let s = c.state.read().await;
        let sha = &manifest.base.sha256;
        match s.staleness(sha).and_then(|_| s.bases.get(sha)) {
            Some(&i) => i,
            None => return Err(stale_base(&s, sha)),
        }
    };
    let (base, dir) = cached_base(c, base_iteration).await?;
    let m = manifest.clone();
    tokio::task::spawn_blocking(move || {
        let base = BaseInfo::open_with_sha256(&dir, base.base_sha256)?;
        check_announced(&m, &base)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| match e {
        e if e.is_local_io() => ApiError::internal(e),
        e => ApiError::bad_request(e.code(), e.to_string()),
    })
}

/// The manifest of committed base `iteration` and its directory in the local cache (fetched and
/// verified if missing).
async fn cached_base(
    c: &Coordinator,
    iteration: u64,
) -> Result<(coldfuse_shared::api::BaseManifest, std::path::PathBuf), ApiError> {
    let base: coldfuse_shared::api::BaseManifest = c
        .store
        .get_json(&keys::base_file(iteration, keys::BASE_MANIFEST))
        .await?
        .ok_or_else(|| ApiError::internal(format!("iteration {iteration} has no base manifest")))?;
    let dir = c.cache_base(&base).await.map_err(ApiError::internal)?;
    Ok((base, dir))
}

/// 409 `stale_base`: a diff against `sha`, which is not a base contributions are taken for.
fn stale_base(s: &crate::state::State, sha: &str) -> ApiError {
    ApiError::conflict(
        ErrorCode::StaleBase,
        format!(
            "diff is against base {sha}, the current base is iteration {} ({}); pull it and train again",
            s.latest.iteration, s.latest.base_sha256
        ),
    )
}

fn round_fusing() -> ApiError {
    ApiError::conflict(
        ErrorCode::RoundFusing,
        "the round is being fused; pull the new base and train again",
    )
}

/// What an upload checks its diff against, read from the state when it starts.
struct Pending {
    iteration: u64,
    manifest: DiffManifest,
    base_iteration: u64,
    max_relative_norm: Option<f64>,
}

/// `PUT /v1/contributions/{contributor}/diff`: upload the announced diff, whole or in `Content-Range`
/// chunks (202 with `received_bytes` until the last one); the last byte brings the verdict. A chunk
/// that neither ends the diff nor completes an 8 MiB part is kept only if it brings at least 1 MiB
/// (an eighth of a diff under 8 MiB); resume from `received_bytes`.
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
    // The slot first: the manifest read below cannot be replaced by an announce until this returns.
    let slot = c.uploads.take(&contributor)?;
    let p = pending(&c, &contributor).await?;
    let chunk = upload::content_range(&headers, p.manifest.diff_bytes)?;
    // Receiving, checking, storing and recording the verdict run on their own task, which holds the
    // slot: a client that hangs up can neither lose what arrived, split the store from memory, nor
    // start a second validation.
    let task = tokio::spawn(
        receive_upload(c, headers, p, contributor, body, chunk, slot)
            .instrument(tracing::Span::current()),
    );
    task.await.map_err(ApiError::internal)?
}

/// Receives one request's bytes; when they complete the diff, checks, stores and accepts it.
async fn receive_upload(
    c: Arc<Coordinator>,
    headers: HeaderMap,
    p: Pending,
    contributor: String,
    body: Body,
    chunk: Option<upload::ChunkRange>,
    _slot: upload::UploadSlot,
) -> Result<(StatusCode, Json<ContributionStatus>), ApiError> {
    let _receiving = c.metrics.upload_started();
    let total = p.manifest.diff_bytes;
    let (start, limit) = chunk.map_or((0, total), |r| (r.start, r.len));
    let (base_manifest, base_dir) = cached_base(&c, p.base_iteration).await?;
    let (dir, sha) = (base_dir.clone(), base_manifest.base_sha256.clone());
    let base = tokio::task::spawn_blocking(move || BaseInfo::open_with_sha256(&dir, sha))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let idle = c.upload_body_idle();
    let received = upload::receive(
        &c,
        p.iteration,
        &contributor,
        &p.manifest,
        &base,
        body,
        start,
        limit,
        idle,
    )
    .await?;
    let up = match received {
        Ok(upload::Received::Complete(up)) => up,
        Ok(upload::Received::Partial(size)) if chunk.is_some() => {
            let status = ContributionStatus {
                iteration: p.iteration,
                contributor: contributor.clone(),
                diff_sha256: p.manifest.diff_sha256.clone(),
                verdict: None,
                received_bytes: size,
                receipt: None,
                quarantined: None,
            };
            return Ok((StatusCode::ACCEPTED, Json(status)));
        }
        // A whole-file upload: whatever arrived is the diff.
        Ok(upload::Received::Partial(size)) => {
            let fault = upload::Fault {
                code: ErrorCode::Integrity,
                message: format!("received {size} bytes; the manifest says {total} bytes"),
            };
            return Err(reject_upload(&c, &p, &contributor, fault).await?);
        }
        Err(fault) => return Err(reject_upload(&c, &p, &contributor, fault).await?),
    };
    let bound = match p.max_relative_norm {
        Some(ratio) => Some((ratio, base_norm(&c, &base_dir, &base_manifest).await?)),
        None => None,
    };
    let stats = match upload::finish(&c, up, bound).await? {
        Ok(stats) => stats,
        Err(fault) => return Err(reject_upload(&c, &p, &contributor, fault).await?),
    };
    // The diff is stored; the verdict is committed create-only: a contribution counts once durable.
    let accepted = accept(&c, &headers, &p, &contributor, &stats).await;
    upload::forget(&c, p.iteration, &contributor).await;
    let verdict = accepted?;
    Folder::accepted(&c, p.iteration, &contributor, &p.manifest).await;
    c.metrics.accepted(total);
    c.wake.notify_one();
    tracing::info!(%contributor, iteration = p.iteration, bytes = total, "contribution accepted");
    Ok((
        StatusCode::OK,
        Json(ContributionStatus {
            iteration: p.iteration,
            contributor,
            diff_sha256: p.manifest.diff_sha256.clone(),
            receipt: accepted_receipt(&c, p.iteration, &p.manifest, &verdict),
            verdict: Some(verdict),
            received_bytes: total,
            quarantined: None,
        }),
    ))
}

/// Discards what the coordinator holds of a faulty upload and records its rejection; answers the
/// 422 to send.
async fn reject_upload(
    c: &Coordinator,
    p: &Pending,
    contributor: &str,
    fault: upload::Fault,
) -> Result<ApiError, ApiError> {
    upload::discard(c, p.iteration, contributor).await;
    let verdict = reject(c, p.iteration, contributor, fault.code, fault.message).await?;
    Ok(rejection(verdict))
}

/// The announced contribution an upload continues, if it may upload now.
async fn pending(c: &Coordinator, contributor: &str) -> Result<Pending, ApiError> {
    let s = c.state.read().await;
    let Some(entry) = s.round.get(contributor) else {
        return Err(ApiError::not_found(format!(
            "no announced contribution of {contributor}; POST its manifest first"
        )));
    };
    if entry.verdict.is_some() || entry.quarantined.is_some() {
        return Err(ApiError::conflict(
            ErrorCode::AlreadyUploaded,
            "this contribution already has a verdict; announce again to resubmit",
        ));
    }
    if s.fusing.get() {
        return Err(round_fusing());
    }
    let Some(base_iteration) = s.bases.get(&entry.manifest.base.sha256).copied() else {
        return Err(ApiError::conflict(
            ErrorCode::StaleBase,
            "the diff's base is not a committed base",
        ));
    };
    Ok(Pending {
        iteration: s.round_iteration(),
        manifest: entry.manifest.clone(),
        base_iteration,
        max_relative_norm: s.config.max_relative_norm,
    })
}

/// The body L2 norm of a cached base, measured once per base (whatever the diffs sent against it).
async fn base_norm(
    c: &Coordinator,
    dir: &std::path::Path,
    base: &coldfuse_shared::api::BaseManifest,
) -> Result<f64, ApiError> {
    if let Some(n) = c.base_norm(&base.base_sha256) {
        return Ok(n);
    }
    let (dir, sha) = (dir.to_path_buf(), base.base_sha256.clone());
    let norm = tokio::task::spawn_blocking(move || {
        BaseInfo::open_with_sha256(&dir, sha).and_then(|b| b.body_l2_norm())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    c.remember_base_norm(&base.base_sha256, norm);
    Ok(norm)
}

/// Records the accepted verdict, once the round is still the one the diff was validated for, no fusion
/// runs, the announced manifest is still this one and the token is still valid; all under the state
/// lock, which fusions and quarantines take too.
async fn accept(
    c: &Coordinator,
    headers: &HeaderMap,
    p: &Pending,
    contributor: &str,
    stats: &DiffStats,
) -> Result<Verdict, ApiError> {
    let mut s = c.state.write().await;
    if s.fusing.get() {
        return Err(round_fusing());
    }
    if s.round_iteration() != p.iteration || s.staleness(&p.manifest.base.sha256).is_none() {
        return Err(ApiError::conflict(
            ErrorCode::StaleBase,
            "the base changed during the upload; pull the new base and train again",
        ));
    }
    let current = s.round.get(contributor);
    if current
        .is_none_or(|e| e.manifest != p.manifest || e.verdict.is_some() || e.quarantined.is_some())
    {
        return Err(ApiError::conflict(
            ErrorCode::Superseded,
            "the contribution changed during the upload; check its status",
        ));
    }
    auth::require_contributor(c, headers, contributor).await?;
    let verdict = Verdict::Accepted {
        l2_norm: stats.l2_norm,
        at: now_unix(),
    };
    let key = keys::contribution_file(p.iteration, contributor, keys::VERDICT);
    if !c.store.create_json(&key, &verdict).await? {
        return Err(ApiError::conflict(
            ErrorCode::Duplicate,
            "a verdict for this contribution already exists",
        ));
    }
    s.first_accepted_at.get_or_insert(now_unix());
    if let Some(entry) = s.round.get_mut(contributor) {
        entry.verdict = Some(verdict.clone());
    }
    Ok(verdict)
}

async fn reject(
    c: &Coordinator,
    iteration: u64,
    contributor: &str,
    reason: ErrorCode,
    message: String,
) -> Result<Verdict, ApiError> {
    let verdict = Verdict::Rejected {
        reason,
        message,
        at: now_unix(),
    };
    c.store
        .put_json(
            &keys::contribution_file(iteration, contributor, keys::VERDICT),
            &verdict,
        )
        .await?;
    if let Some(entry) = c.state.write().await.round.get_mut(contributor) {
        entry.verdict = Some(verdict.clone());
    }
    c.metrics.rejected(reason.as_str());
    tracing::info!(%contributor, iteration, reason = reason.as_str(), "contribution rejected");
    Ok(verdict)
}

fn rejection(verdict: Verdict) -> ApiError {
    match verdict {
        Verdict::Rejected {
            reason, message, ..
        } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, reason, message),
        Verdict::Accepted { .. } => ApiError::internal("accepted verdict treated as a rejection"),
    }
}

/// `GET /v1/contributions/{contributor}`: the contributor's contribution to the current round (for
/// that site's own token, admins and auditors: its norm, progress and any quarantine are the site's).
#[utoipa::path(get, path = "/v1/contributions/{contributor}", operation_id = "contribution_status", params(("contributor" = String, Path)), responses((status = 200, body = ContributionStatus), (status = 401), (status = 403), (status = 404)))]
pub async fn status(
    State(c): State<Arc<Coordinator>>,
    Path(contributor): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ContributionStatus>, ApiError> {
    auth::require_site_reader(&c, &headers, &contributor).await?;
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
        None => upload::received(&c, iteration, &contributor, &entry.manifest.diff_sha256).await?,
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
        quarantined: entry.quarantined.clone(),
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
