//! Fusing a round off the request path: triggered by quorum, deadline or admin; publishes the next
//! base completely, commits it with a create-only lineage record, then switches `latest` (or, with a
//! promotion gate, leaves it as a candidate for `gate.rs`, whose site-report deadline this task
//! also keeps).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use coldfuse_shared::{
    api::{
        keys, model_card, now_unix, CardOrigin, IterationRecord, LatestPointer,
        LineageContribution, Promotion, Verdict, MODEL_CARD,
    },
    diff::{DiffManifest, DIFF_FILE},
    fusion::{clip_bound, foldable, replay, replay_sum, FusionError, RecordedDiff, ReplayInputs},
    hash::sha256_file,
    store::block_size,
};

use crate::{
    publish::publish_base,
    quarantine::{quarantine, Why},
    Coordinator,
};

/// Runs forever: waits for a wake-up or the round's deadline, and fuses when the round is due. After
/// a failure it waits before the next attempt, doubling from 5 s to 10 min (a wake-up, e.g. a new
/// acceptance or an admin, still tries at once).
pub async fn run(c: Arc<Coordinator>) {
    let mut backoff: Option<Duration> = None;
    loop {
        // A candidate whose site reports' deadline passed is decided first (it may free the round).
        let gate_due = match crate::gate::check_deadline(&c).await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e.message, "deciding the candidate at its deadline failed");
                Some(now_unix() + 5)
            }
        };
        let wait = {
            let s = c.state.read().await;
            // While a candidate is undecided no round fuses: its deadline would only spin the loop.
            let round_due = s.deadline().filter(|_| s.candidate.is_none());
            let due = round_due
                .into_iter()
                .chain(gate_due)
                .min()
                .map(|d| Duration::from_secs(d.saturating_sub(now_unix()).max(1)))
                .unwrap_or(Duration::from_secs(3600));
            backoff.map_or(due, |b| due.max(b))
        };
        tokio::select! {
            _ = c.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        match fuse_round(&c, false).await {
            Ok(_) => backoff = None,
            Err(e) => {
                let next = backoff.map_or(Duration::from_secs(5), |b| (b * 2).min(MAX_BACKOFF));
                tracing::error!(
                    error = %format!("{e:#}"),
                    retry_in_s = next.as_secs(),
                    "fusion failed; nothing was published"
                );
                c.metrics.fusion_failed();
                backoff = Some(next);
            }
        }
    }
}

/// The longest wait between failed fusion attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Fuses the current round if it is due (or, with `force`, if it has any accepted contribution).
/// Returns the committed lineage record, or None when there was nothing to do. A contribution whose
/// diff makes the fusion fail is quarantined and the rest are fused; after any other failure the
/// state is reloaded from the store (which may be ahead of memory if the failure came after the
/// commit).
pub async fn fuse_round(c: &Coordinator, force: bool) -> anyhow::Result<Option<IterationRecord>> {
    let _serial = c.fusion_lock.lock().await;
    loop {
        let (guard, iteration, latest, config, accepted) = {
            let mut s = c.state.write().await;
            for contributor in c.take_revocations() {
                let message = "its token was revoked during the previous fusion".to_string();
                quarantine(c, &mut s, &contributor, Why::Revoked, message).await?;
            }
            let due = s.should_fuse(now_unix())
                || (force && !s.fusing.get() && s.candidate.is_none() && !s.accepted().is_empty());
            if !due {
                return Ok(None);
            }
            // Outliers are judged against the round about to be fused (not a partial one), then the
            // round is judged due again without them (the quorum counts what would be fused).
            let outliers = outliers(&s);
            if !outliers.is_empty() {
                for (contributor, message) in outliers {
                    quarantine(c, &mut s, &contributor, Why::NormOutlier, message).await?;
                }
                continue;
            }
            let guard = s.fusing.start();
            let accepted: Vec<(String, DiffManifest, u64)> = s
                .accepted()
                .iter()
                .map(|k| {
                    let m = s.round[*k].manifest.clone();
                    let tau = s.staleness(&m.base.sha256).unwrap_or(0);
                    (k.to_string(), m, tau)
                })
                .collect();
            let snapshot = (
                s.round_iteration(),
                s.latest.clone(),
                s.config.clone(),
                accepted,
            );
            (guard, snapshot.0, snapshot.1, snapshot.2, snapshot.3)
        };
        let result = fuse_and_commit(c, iteration, &latest, &config, &accepted).await;
        let mut s = c.state.write().await;
        match result {
            Ok((record, manifest, gated)) => {
                s.bases.insert(manifest.base_sha256.clone(), iteration);
                s.committed = iteration;
                match gated {
                    Some(pending) => {
                        s.candidate = Some(pending);
                        // The fusion task re-plans its waits: the candidate's site deadline.
                        c.wake.notify_one();
                    }
                    None => s.latest = manifest,
                }
                s.round = BTreeMap::new();
                s.first_accepted_at = None;
                drop(guard);
                return Ok(Some(record));
            }
            Err(e) => {
                // A diff's content is the contributor's doing; reading it (a store or disk error)
                // is ours, and is retried instead.
                let culprit = match e.downcast_ref::<FusionError>() {
                    Some(FusionError::Diff {
                        contributor,
                        source,
                        ..
                    }) if !source.is_local_io() => Some((contributor, source)),
                    _ => None,
                };
                if let Some((contributor, source)) = culprit {
                    tracing::error!(%contributor, error = %format!("{e:#}"), "a diff failed the fusion");
                    // The reason, not the coordinator's paths (they are in the log).
                    let message = format!(
                        "fusing it failed ({}); the rest of the round was fused without it",
                        source.code()
                    );
                    quarantine(c, &mut s, contributor, Why::FusionFailed, message).await?;
                    drop((s, guard));
                    continue;
                }
                drop((s, guard));
                if let Err(reload) = c.reload().await {
                    tracing::error!(error = %reload, "reloading the state after a failed fusion");
                }
                return Err(e);
            }
        }
    }
}

/// The accepted contributions whose L2 norm is above the deployment's `exclude_above_median` × the
/// median of the round's accepted norms (`fusion::clip_bound`), each with the reason recorded for it.
fn outliers(s: &crate::state::State) -> Vec<(String, String)> {
    let Some(k) = s.config.exclude_above_median else {
        return Vec::new();
    };
    let norms: Vec<(String, f64)> = s
        .accepted()
        .into_iter()
        .filter_map(|id| match s.round[id].verdict {
            Some(Verdict::Accepted { l2_norm, .. }) => Some((id.to_string(), l2_norm)),
            _ => None,
        })
        .collect();
    let values: Vec<f64> = norms.iter().map(|(_, n)| *n).collect();
    let Some(bound) = clip_bound(&values, None, Some(k)) else {
        return Vec::new();
    };
    norms
        .into_iter()
        .filter(|(_, n)| *n > bound)
        .map(|(id, n)| {
            let why = format!(
                "its L2 norm {n:.4e} is above {k} × the median of the round's accepted norms \
                 ({bound:.4e}); the rest of the round was fused without it"
            );
            (id, why)
        })
        .collect()
}

async fn fuse_and_commit(
    c: &Coordinator,
    iteration: u64,
    latest: &coldfuse_shared::api::BaseManifest,
    config: &coldfuse_shared::api::DeploymentConfig,
    accepted: &[(String, DiffManifest, u64)],
) -> anyhow::Result<(
    IterationRecord,
    coldfuse_shared::api::BaseManifest,
    Option<Promotion>,
)> {
    let started = std::time::Instant::now();
    // Memory may trail the store (an error after an earlier commit): never publish over a commit.
    if c.store
        .get_json::<serde_json::Value>(&keys::iteration_record(iteration))
        .await?
        .is_some()
    {
        anyhow::bail!("iteration {iteration} is already committed; reloading the state");
    }
    let scratch = tempfile::Builder::new()
        .prefix(&format!("fusion-{iteration:06}-"))
        .tempdir_in(&c.work)?;
    let base_dir = c.cache_base(latest).await?;
    let optimizer = config.server_optimizer;
    let state_out = scratch.path().join("optimizer.safetensors");
    let prev_state = scratch.path().join("optimizer-prev.safetensors");
    let has_prev = !optimizer.is_none()
        && c.store
            .get_file(&keys::optimizer_state(latest.iteration), &prev_state)
            .await
            .is_ok();
    let out = scratch.path().join("out");
    let (parent_sha, fusion, state_path) = (
        latest.base_sha256.clone(),
        config.fusion.clone(),
        state_out.clone(),
    );
    let out_dir = out.clone();
    // Linear: the running sum, and the diffs it lacks (folded during the closing pass). Otherwise
    // every diff, streamed.
    let (sum, streamed) = match foldable(&config.fusion) {
        true => {
            let (sum, last) = c.folder.sum_for(c, iteration, latest, accepted).await?;
            (Some(sum), last)
        }
        false => {
            // A sum kept from before a change of strategy is not needed any more.
            c.folder.clear().await;
            (None, accepted.to_vec())
        }
    };
    let fold_order = sum.as_ref().map(|sum| {
        let last = streamed.iter().map(|(id, _, _)| id.clone());
        sum.order().into_iter().chain(last).collect::<Vec<_>>()
    });
    let diffs = stored_diffs(c, iteration, &streamed).await?;
    let replayed = tokio::task::spawn_blocking(move || {
        let inputs = ReplayInputs {
            parent_dir: &base_dir,
            parent_sha256: &parent_sha,
            diffs: &diffs,
            fold_order: None,
            fusion: &fusion,
            optimizer,
            prev_state: has_prev.then_some(prev_state.as_path()),
        };
        match &sum {
            Some(sum) => replay_sum(&inputs, sum, &out_dir, &state_path),
            None => replay(&inputs, &out_dir, &state_path),
        }
    })
    .await
    .context("fusion task")??;
    let (report, architecture) = (replayed.report, replayed.architecture);
    let weights = out.join(coldfuse_shared::diff::BASE_WEIGHTS);
    let base_sha256 = tokio::task::spawn_blocking(move || sha256_file(&weights)).await??;
    let optimizer_state_sha256 = if optimizer.is_none() {
        None
    } else {
        c.store
            .put_file(&keys::optimizer_state(iteration), &state_out)
            .await?;
        Some(sha256_file(&state_out)?)
    };
    let by_contributor: BTreeMap<&str, (&DiffManifest, u64)> = accepted
        .iter()
        .map(|(k, m, tau)| (k.as_str(), (m, *tau)))
        .collect();
    let record = IterationRecord {
        iteration,
        parent: Some(latest.iteration),
        parent_sha256: Some(latest.base_sha256.clone()),
        base_sha256: base_sha256.clone(),
        fusion: Some(config.fusion.clone()),
        contributions: report
            .contributions
            .iter()
            .map(|r| LineageContribution {
                contributor: r.contributor.clone(),
                diff_sha256: r.diff_sha256.clone(),
                num_examples: r.num_examples,
                weight: r.weight,
                clip_factor: r.clip_factor,
                staleness: by_contributor
                    .get(r.contributor.as_str())
                    .map_or(0, |(_, tau)| *tau),
                metrics: by_contributor
                    .get(r.contributor.as_str())
                    .map(|(m, _)| m.metrics.clone())
                    .unwrap_or_default(),
            })
            .collect(),
        update_l2_norm: Some(report.update_l2_norm),
        server_optimizer: (!optimizer.is_none()).then_some(optimizer),
        optimizer_state_sha256,
        fold_order,
        origin: None,
        created_by: concat!("coldfuse ", env!("CARGO_PKG_VERSION")).into(),
        created_at: now_unix(),
    };
    // The card: the parent's (copied by the fusion) gives the origin and licence to inherit.
    let card_path = out.join(MODEL_CARD);
    let parent_card = std::fs::read_to_string(&card_path).ok();
    let origin = CardOrigin::from_card(parent_card.as_deref(), "the original model");
    std::fs::write(&card_path, model_card(&record, &architecture, &origin))?;
    let manifest = publish_base(&c.store, iteration, &out, &architecture).await?;
    anyhow::ensure!(
        manifest.base_sha256 == base_sha256,
        "the fused weights changed while publishing"
    );
    // Gated: the candidate's record exists before its commit, so a committed candidate always has
    // one (a fusion redone after a crash overwrites it).
    let gated = match config.gate {
        Some(_) => {
            let pending = Promotion::pending(iteration, now_unix());
            c.store
                .put_json(&keys::gate_record(iteration), &pending)
                .await?;
            Some(pending)
        }
        None => None,
    };
    fault_pause("COLDFUSE_FAULT_PAUSE_BEFORE_COMMIT_MS").await;
    if !c
        .store
        .create_json(&keys::iteration_record(iteration), &record)
        .await?
    {
        anyhow::bail!(
            "iteration {iteration} was committed by another coordinator; restart to reload"
        );
    }
    fault_pause("COLDFUSE_FAULT_PAUSE_AFTER_COMMIT_MS").await;
    if gated.is_none() {
        c.store
            .put_json(keys::LATEST, &LatestPointer::to(iteration))
            .await?;
    }
    let cached = c.base_dir(iteration);
    let _ = tokio::fs::remove_dir_all(&cached).await;
    if let Some(parent) = cached.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::rename(&out, &cached).await?;
    let seconds = started.elapsed().as_secs_f64();
    c.metrics.fused(seconds);
    tracing::info!(
        iteration,
        contributions = accepted.len(),
        seconds,
        gated = gated.is_some(),
        "iteration committed"
    );
    Ok((record, manifest, gated))
}

/// Every accepted diff as a ranged reader of its stored object, for the strategies that need them
/// all at once: the engine streams them from the store (no local copy; blocks of
/// `store::block_size(N)` bytes, a few kept per diff).
async fn stored_diffs(
    c: &Coordinator,
    iteration: u64,
    accepted: &[(String, DiffManifest, u64)],
) -> anyhow::Result<Vec<RecordedDiff>> {
    let block = block_size(accepted.len());
    let mut diffs = Vec::new();
    for (contributor, manifest, staleness) in accepted {
        let key = keys::contribution_file(iteration, contributor, DIFF_FILE);
        let source = c.store.range_source(&key, block).await?;
        diffs.push(RecordedDiff {
            path: key.into(),
            source: Some(Arc::new(source)),
            manifest: manifest.clone(),
            staleness: *staleness,
        });
    }
    Ok(diffs)
}

/// Test hooks for crash tests: `COLDFUSE_FAULT_PAUSE_BEFORE_COMMIT_MS` pauses between publishing a
/// fused base's files and committing its lineage record, `COLDFUSE_FAULT_PAUSE_AFTER_COMMIT_MS`
/// between the commit and the `latest` switch, so a test can kill the process there.
async fn fault_pause(var: &str) {
    if let Some(ms) = std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) {
        tracing::warn!(ms, hook = var, "fault hook: pausing");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
