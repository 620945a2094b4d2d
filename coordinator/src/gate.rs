//! The promotion gate on the coordinator: a gated fusion commits its iteration as a candidate (lineage
//! record + `gate/{i}.json` pending) without switching `latest`; evaluators report held-out scores
//! and contributor sites report aggregates of their own evaluation; the gate promotes it (card gets
//! the evals, then `latest` moves) or holds it for the operator, who can promote or discard by hand.
//! The site reports' deadline is checked by the fusion task. Decisions are serialised with fusions by
//! the fusion lock.

use coldfuse_shared::{
    api::{
        keys, now_unix, with_gate, BaseManifest, GateEval, GateReceipt, Promotion, PromotionState,
        ReceivedReport, SiteReport, MODEL_CARD,
    },
    hash::sha256_file,
};

use crate::{ApiError, Coordinator};
use coldfuse_shared::api::ErrorCode;

/// Who decides.
#[derive(Debug, Clone)]
pub enum DecidedBy {
    /// The gate, from the evals.
    Gate,
    /// An admin (token id), by hand.
    Admin(String),
}

/// The current candidate, checked to be `iteration` and undecided.
async fn candidate(c: &Coordinator, iteration: u64) -> Result<Promotion, ApiError> {
    let s = c.state.read().await;
    match &s.candidate {
        Some(p) if p.iteration == iteration => Ok(p.clone()),
        Some(p) => Err(ApiError::conflict(
            ErrorCode::NotCandidate,
            format!(
                "iteration {iteration} is not the candidate (iteration {} is)",
                p.iteration
            ),
        )),
        None => Err(ApiError::conflict(
            ErrorCode::NotCandidate,
            format!("there is no candidate awaiting the gate (iteration {iteration} is not one)"),
        )),
    }
}

/// Adds an evaluator's result to candidate `iteration`, then lets the gate decide if it can.
pub async fn report(
    c: &Coordinator,
    iteration: u64,
    mut eval: GateEval,
    reporter: &str,
) -> Result<Promotion, ApiError> {
    if !(eval.reference_score.is_finite() && eval.candidate_score.is_finite()) {
        return Err(ApiError::bad_request(
            ErrorCode::BadEval,
            "scores must be finite numbers",
        ));
    }
    let _serial = c.fusion_lock.lock().await;
    let mut p = candidate(c, iteration).await?;
    let latest = c.state.read().await.latest.iteration;
    if eval.reference_iteration != latest {
        return Err(ApiError::conflict(
            ErrorCode::WrongReference,
            format!(
                "the eval compares with iteration {}, but latest is iteration {latest}",
                eval.reference_iteration
            ),
        ));
    }
    eval.reported_by = reporter.to_string();
    p.evals.push(eval);
    p.updated_at = now_unix();
    judge_and_save(c, p).await
}

/// Adds contributor `contributor`'s site report to candidate `iteration` (one per contributor),
/// then lets the gate decide if it can. Returns the report as kept (with its digest) and the record.
pub async fn report_site(
    c: &Coordinator,
    iteration: u64,
    report: SiteReport,
    contributor: &str,
) -> Result<(ReceivedReport, Promotion), ApiError> {
    report
        .validate()
        .map_err(|e| ApiError::bad_request(ErrorCode::BadReport, e))?;
    let _serial = c.fusion_lock.lock().await;
    let mut p = candidate(c, iteration).await?;
    if p.state != PromotionState::Pending {
        // A held candidate waits for the operator: late reports no longer decide anything.
        return Err(ApiError::conflict(
            ErrorCode::NotCandidate,
            format!(
                "candidate {iteration} is {:?}: site reports are closed",
                p.state
            ),
        ));
    }
    let (gate, latest) = {
        let s = c.state.read().await;
        (s.config.gate.clone(), s.latest.iteration)
    };
    if gate.as_ref().is_none_or(|g| g.sites.is_none()) {
        return Err(ApiError::conflict(
            ErrorCode::NoSiteEvaluation,
            "this deployment's gate takes no site reports (gate.sites is not set)",
        ));
    }
    if report.reference_iteration != latest {
        return Err(ApiError::conflict(
            ErrorCode::WrongReference,
            format!(
                "the report compares with iteration {}, but latest is iteration {latest}",
                report.reference_iteration
            ),
        ));
    }
    if let Some(r) = p
        .site_reports
        .iter()
        .find(|r| r.contributor.as_deref() == Some(contributor))
    {
        return Err(ApiError::conflict(
            ErrorCode::AlreadyReported,
            format!(
                "`{contributor}` already reported on candidate {iteration} (report {})",
                r.digest
            ),
        ));
    }
    let nonce = {
        let mut bytes = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        hex::encode(bytes)
    };
    let received = ReceivedReport {
        digest: report.digest(iteration, contributor, &nonce),
        contributor: Some(contributor.to_string()),
        nonce: Some(nonce),
        received_at: now_unix(),
        report,
    };
    p.site_reports.push(received.clone());
    p.updated_at = received.received_at;
    tracing::info!(iteration, contributor, digest = %received.digest, "site report");
    Ok((received, judge_and_save(c, p).await?))
}

/// Decides the candidate if its site reports' deadline passed while it was pending (called by the
/// fusion task); returns when to look again (None: no candidate waits on a deadline).
pub async fn check_deadline(c: &Coordinator) -> Result<Option<u64>, ApiError> {
    let _serial = c.fusion_lock.lock().await;
    let (p, gate) = {
        let s = c.state.read().await;
        match (&s.candidate, &s.config.gate) {
            (Some(p), Some(g)) if p.state == PromotionState::Pending => (p.clone(), g.clone()),
            _ => return Ok(None),
        }
    };
    let Some(deadline) = p.site_deadline(&gate) else {
        return Ok(None);
    };
    let now = now_unix();
    if now < deadline {
        return Ok(Some(deadline));
    }
    // Saved only when the gate can decide; else the operator's evals will (nothing to wait for).
    if p.judge(&gate, now).is_some() {
        judge_and_save(c, p).await?;
    }
    Ok(None)
}

/// Lets the gate judge `p` (caller holds the fusion lock): promotes it, holds it, or saves it as is.
async fn judge_and_save(c: &Coordinator, mut p: Promotion) -> Result<Promotion, ApiError> {
    let gate = c.state.read().await.config.gate.clone();
    let now = now_unix();
    let verdict = gate.as_ref().and_then(|g| p.judge(g, now));
    if verdict.is_some() {
        p.used_reports = p.site_reports.iter().map(|r| r.digest.clone()).collect();
        p.updated_at = now;
    }
    match verdict {
        Some((PromotionState::Promoted, reason)) => {
            apply(c, p, PromotionState::Promoted, DecidedBy::Gate, reason).await
        }
        Some((state, reason)) => {
            if p.state != PromotionState::Held {
                tracing::warn!(iteration = p.iteration, %reason, "candidate held by the gate");
            }
            p.state = state;
            p.reason = Some(reason);
            p.decided_by = Some("gate".into());
            save(c, &mut p).await?;
            Ok(p)
        }
        None => {
            save(c, &mut p).await?;
            Ok(p)
        }
    }
}

/// An admin's decision on candidate `iteration`.
pub async fn decide(
    c: &Coordinator,
    iteration: u64,
    state: PromotionState,
    admin: &str,
    reason: Option<String>,
) -> Result<Promotion, ApiError> {
    let _serial = c.fusion_lock.lock().await;
    let p = candidate(c, iteration).await?;
    let reason = reason.unwrap_or_else(|| format!("{state:?} by hand"));
    apply(c, p, state, DecidedBy::Admin(admin.to_string()), reason).await
}

/// Makes a decision final: writes the record and, for a promotion, the card then `latest`.
async fn apply(
    c: &Coordinator,
    mut p: Promotion,
    state: PromotionState,
    by: DecidedBy,
    reason: String,
) -> Result<Promotion, ApiError> {
    p.state = state;
    p.reason = Some(reason);
    p.decided_by = Some(match by {
        DecidedBy::Gate => "gate".into(),
        DecidedBy::Admin(id) => format!("admin:{id}"),
    });
    p.updated_at = now_unix();
    // Order matters for a crash: `latest` moves before the record says Promoted, so a restart that
    // finds latest = the candidate with an undecided record completes the promotion (state.rs).
    if state == PromotionState::Promoted {
        let manifest = republish_card(c, &p).await?;
        c.cache_base(&manifest).await.map_err(ApiError::internal)?;
        c.store
            .put_json(
                keys::LATEST,
                &coldfuse_shared::api::LatestPointer::to(p.iteration),
            )
            .await?;
        let mut s = c.state.write().await;
        s.latest = manifest;
        s.first_accepted_at = None;
    }
    save(c, &mut p).await?;
    c.state.write().await.candidate = None;
    c.wake.notify_one();
    tracing::info!(iteration = p.iteration, state = ?p.state, reason = ?p.reason, "gate decision");
    Ok(p)
}

/// Writes the record, with the coordinator's signed statement of its decision (held, promoted or
/// discarded).
async fn save(c: &Coordinator, p: &mut Promotion) -> Result<(), ApiError> {
    p.receipt = GateReceipt::of(p).map(|r| c.signer.sign_gate(r));
    c.store.put_json(&keys::gate_record(p.iteration), p).await?;
    if !p.state.decided() {
        c.state.write().await.candidate = Some(p.clone());
    }
    Ok(())
}

/// Rewrites the candidate's model card with the gate's evals and its manifest entry; the weights
/// (what lineage and contributions name) are untouched.
async fn republish_card(c: &Coordinator, p: &Promotion) -> Result<BaseManifest, ApiError> {
    let i = p.iteration;
    let manifest_key = keys::base_file(i, keys::BASE_MANIFEST);
    let mut manifest: BaseManifest = c
        .store
        .get_json(&manifest_key)
        .await?
        .ok_or_else(|| ApiError::internal(format!("candidate {i} has no manifest")))?;
    let scratch = tempfile::tempdir_in(&c.work).map_err(ApiError::internal)?;
    let path = scratch.path().join(MODEL_CARD);
    c.store
        .get_file(&keys::base_file(i, MODEL_CARD), &path)
        .await?;
    let card = std::fs::read_to_string(&path).map_err(ApiError::internal)?;
    std::fs::write(&path, with_gate(&card, p)).map_err(ApiError::internal)?;
    let sha256 = sha256_file(&path).map_err(ApiError::internal)?;
    let size = std::fs::metadata(&path).map_err(ApiError::internal)?.len();
    c.store
        .put_file(&keys::base_file(i, MODEL_CARD), &path)
        .await?;
    match manifest.files.iter_mut().find(|f| f.name == MODEL_CARD) {
        Some(f) => {
            f.sha256 = sha256;
            f.size = size;
        }
        None => manifest.files.push(coldfuse_shared::api::FileEntry {
            name: MODEL_CARD.into(),
            size,
            sha256,
        }),
    }
    c.store.put_json(&manifest_key, &manifest).await?;
    Ok(manifest)
}
