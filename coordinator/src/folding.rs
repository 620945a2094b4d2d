//! The open round's running sum, for deployments whose fusion is linear (`fusion::foldable`): each
//! accepted diff is folded in by a background task right after its acceptance, so closing the round
//! is one pass over the model whatever the number of contributions.
//!
//! The sum is a cache in `work/fold/`, never the record: lineage records the fold order, and a close
//! whose sum does not hold exactly the contributions being fused (after a restart, a quarantine or a
//! resubmission) starts a new sum and folds what is missing, streamed from the store one diff at a
//! time.
//! Each fold reads its diff from the store (uploads are never kept whole on local disk). Local disk:
//! the sum, 8 bytes per float parameter of the base.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use coldfuse_shared::{
    api::{keys, BaseManifest, SyncMode, Verdict},
    diff::{BaseInfo, DiffManifest, DiffReader, DIFF_FILE},
    fusion::{foldable, FusionError, RunningSum},
    store::block_size,
};
use tokio::sync::Mutex;

use crate::Coordinator;

/// The running sum of the open round, if one is being kept.
#[derive(Debug, Default)]
pub struct Folder(Mutex<Option<RoundSum>>);

/// A running sum and what it was built for.
#[derive(Debug)]
struct RoundSum {
    iteration: u64,
    /// The cached parent base (checked once, when the sum starts).
    base_dir: PathBuf,
    /// Staleness each folded contribution was scaled for.
    staleness: BTreeMap<String, u64>,
    sum: RunningSum,
}

/// One accepted contribution as the fusion takes it: id, manifest, staleness.
pub type Accepted = (String, DiffManifest, u64);

fn dir(work: &Path) -> PathBuf {
    work.join("fold")
}

/// At start-up: empties `work/fold/` (a sum from before a restart is not trusted: it may be
/// half-added), creating it if needed.
pub fn reset_dir(work: &Path) -> std::io::Result<()> {
    let dir = dir(work);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)
}

impl Folder {
    /// After `contributor`'s diff was accepted into round `iteration`: folds it on a background task
    /// when the fusion is foldable.
    pub async fn accepted(
        c: &Arc<Coordinator>,
        iteration: u64,
        contributor: &str,
        manifest: &DiffManifest,
    ) {
        if !foldable(&c.state.read().await.config.fusion) {
            return;
        }
        let (c, contributor, sha256) = (
            c.clone(),
            contributor.to_string(),
            manifest.diff_sha256.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = c
                .folder
                .fold_accepted(&c, iteration, &contributor, &sha256)
                .await
            {
                tracing::warn!(
                    %contributor,
                    error = %format!("{e:#}"),
                    "folding an accepted diff failed; the round's close folds again"
                );
            }
        });
    }

    /// Drops the kept sum (a round closed without it).
    pub async fn clear(&self) {
        *self.0.lock().await = None;
    }

    /// The contributors in the kept sum of round `iteration`, in fold order (empty when none is
    /// kept: none folded yet, or a close took it).
    pub async fn folded(&self, iteration: u64) -> Vec<String> {
        let guard = self.0.lock().await;
        let kept = guard.as_ref().filter(|rs| rs.iteration == iteration);
        kept.map(|rs| rs.sum.order()).unwrap_or_default()
    }

    /// Folds one accepted contribution into the open round's sum, if it is still accepted there
    /// with this diff and not folded yet.
    async fn fold_accepted(
        &self,
        c: &Coordinator,
        iteration: u64,
        contributor: &str,
        sha256: &str,
    ) -> anyhow::Result<()> {
        let mut guard = self.0.lock().await;
        let (latest, accepted) = {
            let s = c.state.read().await;
            let entry = s.round.get(contributor).filter(|e| {
                e.manifest.diff_sha256 == sha256
                    && e.quarantined.is_none()
                    && matches!(e.verdict, Some(Verdict::Accepted { .. }))
            });
            let tau = entry.and_then(|e| s.staleness(&e.manifest.base.sha256));
            match (entry, tau) {
                // While a close runs, only into a sum it has not taken yet (it then finds the
                // diff folded); once it took the sum it folds what it lacks in its own pass.
                (Some(e), Some(tau))
                    if s.round_iteration() == iteration
                        && foldable(&s.config.fusion)
                        && (!s.fusing.get()
                            || guard.as_ref().is_some_and(|rs| rs.iteration == iteration)) =>
                {
                    (
                        s.latest.clone(),
                        (contributor.to_string(), e.manifest.clone(), tau),
                    )
                }
                // Fused, quarantined, replaced, or a close took the sum (it folds what it lacks).
                _ => return Ok(()),
            }
        };
        let mut rs = take_matching(&mut guard, iteration, &latest, &[]);
        if let Some(kept) = &rs {
            if let Some(tau) = kept.staleness.get(contributor) {
                let same_diff = kept.sum.folded().iter().any(|f| {
                    f.manifest.contributor == contributor && f.manifest.diff_sha256 == sha256
                });
                if same_diff && *tau == accepted.2 {
                    *guard = rs;
                    return Ok(());
                }
                // An earlier diff of the same contributor: a sum without it starts over.
                rs = None;
            }
        }
        let rs = match rs {
            Some(rs) => rs,
            None => RoundSum::create(c, iteration, &latest).await?,
        };
        *guard = Some(fold(c, rs, &latest, &accepted).await?);
        Ok(())
    }

    /// At a round's close: the kept running sum if it holds nothing but contributions of
    /// `accepted` (else a new, empty one), and the contributions of `accepted` it lacks, by id: the
    /// close folds those in its own pass over the model (streamed from the store together), so
    /// after a restart or a drop the round is not folded again one diff, and one pass over the sum,
    /// at a time. The sum leaves the folder: a failed close starts over.
    pub async fn sum_for(
        &self,
        c: &Coordinator,
        iteration: u64,
        latest: &BaseManifest,
        accepted: &[Accepted],
    ) -> anyhow::Result<(RunningSum, Vec<Accepted>)> {
        let mut guard = self.0.lock().await;
        let kept = take_matching(&mut guard, iteration, latest, accepted);
        let rs = match kept {
            Some(rs) => rs,
            None => RoundSum::create(c, iteration, latest).await?,
        };
        let mut missing: Vec<Accepted> = accepted
            .iter()
            .filter(|(id, _, _)| !rs.staleness.contains_key(id))
            .cloned()
            .collect();
        missing.sort_by(|a, b| a.0.cmp(&b.0));
        tracing::info!(
            iteration,
            reused = rs.sum.folded().len(),
            folded_at_close = missing.len(),
            "running sum ready"
        );
        Ok((rs.sum, missing))
    }
}

/// Takes the kept sum out of `slot` if it is over round `iteration` on `latest`, and (when
/// `accepted` is given) holds nothing but contributions of it with the same diff and staleness.
fn take_matching(
    slot: &mut Option<RoundSum>,
    iteration: u64,
    latest: &BaseManifest,
    accepted: &[Accepted],
) -> Option<RoundSum> {
    let rs = slot.take()?;
    let fits = rs.iteration == iteration
        && rs.sum.base_sha256() == latest.base_sha256
        && (accepted.is_empty()
            || rs.sum.folded().iter().all(|f| {
                accepted.iter().any(|(id, m, tau)| {
                    id == &f.manifest.contributor
                        && m.diff_sha256 == f.manifest.diff_sha256
                        && rs.staleness.get(id) == Some(tau)
                })
            }));
    fits.then_some(rs)
}

impl RoundSum {
    async fn create(
        c: &Coordinator,
        iteration: u64,
        latest: &BaseManifest,
    ) -> anyhow::Result<Self> {
        let base_dir = c.cache_base(latest).await?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir(&c.work).join(format!("sum-{iteration:06}-{n}.f64"));
        let sha = latest.base_sha256.clone();
        let dir = base_dir.clone();
        let sum = tokio::task::spawn_blocking(move || {
            let base = BaseInfo::open_with_sha256(&dir, sha)
                .map_err(|e| FusionError::Config(format!("parent base: {e}")))?;
            RunningSum::create(&path, &base)
        })
        .await??;
        Ok(Self {
            iteration,
            base_dir,
            staleness: BTreeMap::new(),
            sum,
        })
    }
}

/// Folds `a` into `rs`, streamed from the store. A diff whose content fails names its contributor (`FusionError::Diff`).
async fn fold(
    c: &Coordinator,
    mut rs: RoundSum,
    latest: &BaseManifest,
    a: &Accepted,
) -> anyhow::Result<RoundSum> {
    let started = std::time::Instant::now();
    let (contributor, manifest, tau) = a;
    let key = keys::contribution_file(rs.iteration, contributor, DIFF_FILE);
    let source = Arc::new(c.store.range_source(&key, block_size(1)).await?);
    let name = PathBuf::from(key);
    let base_dir = rs.base_dir.clone();
    let (parent_sha, mut manifest, tau) = (latest.base_sha256.clone(), manifest.clone(), *tau);
    let folded = tokio::task::spawn_blocking(move || {
        let base = BaseInfo::open_with_sha256(&base_dir, parent_sha.clone())
            .map_err(|e| FusionError::Config(format!("parent base: {e}")))?;
        let (contributor, sha256) = (manifest.contributor.clone(), manifest.diff_sha256.clone());
        // A stale diff (asynchronous mode) is read against the parent's layout and scaled down.
        manifest.base.sha256 = parent_sha;
        let mut reader = DiffReader::open_source(&name, source, manifest, &base).map_err(|e| {
            FusionError::Diff {
                contributor,
                sha256,
                source: Box::new(e),
            }
        })?;
        reader.scale = SyncMode::staleness_scale(tau);
        rs.sum.fold(&reader, None)?;
        rs.staleness
            .insert(reader.manifest.contributor.clone(), tau);
        Ok::<_, FusionError>(rs)
    })
    .await
    .context("fold task")?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::debug!(%contributor, seconds, "folded into the running sum");
    Ok(folded?)
}
