//! The coordinator's view of its deployment: loaded from the store at start, kept in memory, and
//! changed only after the store has been written (so a restart rebuilds exactly this).

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use coldfuse_shared::{
    api::{
        keys, BaseManifest, DeploymentConfig, IterationRecord, LatestPointer, Promotion,
        PromotionState, Quarantine, ReceiptSigner, RoundStatus, TokenRecord, Verdict,
    },
    diff::{DiffManifest, MANIFEST_FILE},
    hash::sha256_file,
};
use tokio::sync::{Mutex, Notify, RwLock};

use crate::{metrics::Metrics, Store, StoreError};

/// A contribution to the current round.
#[derive(Debug, Clone)]
pub struct Contribution {
    /// Its manifest (from the announce).
    pub manifest: DiffManifest,
    /// None until the diff has been uploaded and validated.
    pub verdict: Option<Verdict>,
    /// Set when an accepted contribution was taken out of the round before fusion.
    pub quarantined: Option<Quarantine>,
}

impl Contribution {
    /// Whether it counts towards the round: accepted and not quarantined.
    pub fn counts(&self) -> bool {
        self.quarantined.is_none() && self.verdict.as_ref().is_some_and(Verdict::accepted)
    }
}

/// Whether a fusion is running. Only [`FusingFlag::start`] sets it, under the state's write lock,
/// and the guard it returns clears it when dropped, so a fusion that fails, panics or is cancelled
/// cannot leave the round closed.
#[derive(Debug, Clone, Default)]
pub struct FusingFlag(Arc<AtomicBool>);

/// Clears the [`FusingFlag`] when dropped.
#[derive(Debug)]
pub struct FusingGuard(Arc<AtomicBool>);

impl FusingFlag {
    /// Whether a fusion is running.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Marks a fusion as running until the guard is dropped (call with the state's write lock held).
    pub fn start(&self) -> FusingGuard {
        self.0.store(true, Ordering::SeqCst);
        FusingGuard(self.0.clone())
    }
}

impl Drop for FusingGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The mutable part of the coordinator's state.
#[derive(Debug, Clone)]
pub struct State {
    /// Deployment settings.
    pub config: DeploymentConfig,
    /// The base served as latest, which contributions of this round must be against.
    pub latest: BaseManifest,
    /// Highest committed iteration.
    pub committed: u64,
    /// Contributions to iteration `committed + 1`, by contributor.
    pub round: BTreeMap<String, Contribution>,
    /// When the round's first contribution was accepted (Unix seconds).
    pub first_accepted_at: Option<u64>,
    /// Whether a fusion is running.
    pub fusing: FusingFlag,
    /// Iteration of every committed base, by weights SHA-256.
    pub bases: BTreeMap<String, u64>,
    /// A fused iteration awaiting the promotion gate (no fusion runs until it is decided).
    pub candidate: Option<Promotion>,
}

impl State {
    /// The iteration the current round will produce.
    pub fn round_iteration(&self) -> u64 {
        self.committed + 1
    }

    /// Accepted contributors of the round.
    pub fn accepted(&self) -> Vec<&str> {
        self.round
            .iter()
            .filter(|(_, c)| c.counts() && self.staleness(&c.manifest.base.sha256).is_some())
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// How many iterations the base with weights `sha256` is behind `latest`, if diffs against it
    /// are accepted (always 0 in synchronous mode; up to `max_staleness` in asynchronous mode).
    pub fn staleness(&self, sha256: &str) -> Option<u64> {
        // Latest's own weights are never stale, even when a later candidate (say, a fusion of zero
        // diffs, then discarded) published the same weights and took their entry in `bases`.
        if sha256 == self.latest.base_sha256 {
            return Some(0);
        }
        let k = *self.bases.get(sha256)?;
        let tau = self.latest.iteration.checked_sub(k)?;
        (tau <= self.config.mode.max_staleness()).then_some(tau)
    }

    /// The round's deadline, if one is configured and the round has started.
    pub fn deadline(&self) -> Option<u64> {
        Some(self.first_accepted_at? + self.config.deadline_secs?)
    }

    /// Whether the round should be fused now (quorum, or deadline with enough contributions).
    pub fn should_fuse(&self, now: u64) -> bool {
        let n = self.accepted().len();
        !self.fusing.get()
            && self.candidate.is_none()
            && n > 0
            && (n >= self.config.quorum
                || (n >= self.config.min_contributions
                    && self.deadline().is_some_and(|d| now >= d)))
    }

    /// The status served at `/v1/round`.
    pub fn status(&self) -> RoundStatus {
        let accepted = self.accepted();
        RoundStatus {
            iteration: self.round_iteration(),
            base_iteration: self.latest.iteration,
            base_sha256: self.latest.base_sha256.clone(),
            accepted: accepted.len(),
            rejected: self
                .round
                .values()
                .filter(|c| {
                    c.quarantined.is_some() || c.verdict.as_ref().is_some_and(|v| !v.accepted())
                })
                .count(),
            contributors: accepted.iter().map(|s| s.to_string()).collect(),
            quorum: self.config.quorum,
            deadline: self.deadline(),
            fusing: self.fusing.get(),
            strategy: self.config.fusion.strategy.to_string(),
            candidate: self.candidate.as_ref().map(|p| p.iteration),
        }
    }
}

/// A running coordinator: store, local work directory, state, and the fusion trigger.
#[derive(Debug)]
pub struct Coordinator {
    /// The deployment's store.
    pub store: Store,
    /// Local work directory (base cache, uploads in progress, fusion scratch).
    pub work: PathBuf,
    /// State.
    pub state: RwLock<State>,
    /// Token records by hash.
    tokens: RwLock<HashMap<String, TokenRecord>>,
    /// Wakes the fusion task.
    pub wake: Notify,
    /// Serialises fusions.
    pub fusion_lock: Mutex<()>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Uploads running now, one per contributor.
    pub uploads: crate::upload::UploadSlots,
    /// Signs contribution receipts.
    pub signer: ReceiptSigner,
    /// L2 norm of each base body diffs were bounded against, by weights SHA-256.
    base_norms: std::sync::Mutex<HashMap<String, f64>>,
    /// Cached base files whose hash was checked since start-up (path → sha256): checked again only
    /// by size, so validations, folds and closes do not hash the whole base each time.
    verified_files: std::sync::Mutex<HashMap<PathBuf, String>>,
    /// Diff validations running at once (hashing and scanning are CPU- and disk-bound).
    pub validations: tokio::sync::Semaphore,
    /// Contributors whose token was revoked while a fusion ran: quarantined before the next snapshot.
    revocations: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Longest wait for the next bytes of an upload body, in milliseconds.
    upload_body_idle_ms: std::sync::atomic::AtomicU64,
    /// The open round's running sum (linear fusions).
    pub folder: crate::folding::Folder,
}

/// A failure to start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store holds no deployment.
    #[error(
        "{0}: no deployment here; run `coldfuse-coordinator init --base DIR --store URL` first"
    )]
    NotInitialised(String),
    /// The receipt key could not be loaded.
    #[error("receipt key: {0:#}")]
    Signing(anyhow::Error),
    /// The store is inconsistent.
    #[error("store is inconsistent: {0}")]
    Inconsistent(String),
    /// The work directory failed.
    #[error("work directory {path}: {source}")]
    Work {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl Coordinator {
    /// Loads the deployment from `store`, caching the latest base under `work`; receipts are signed
    /// with `signer` (the operator's key) or else a legacy secret kept in the store.
    pub async fn load(
        store: Store,
        work: &Path,
        signer: Option<ReceiptSigner>,
    ) -> Result<Arc<Self>, LoadError> {
        std::fs::create_dir_all(work).map_err(|source| LoadError::Work {
            path: work.to_path_buf(),
            source,
        })?;
        let state = read_state(&store, FusingFlag::default()).await?;
        crate::folding::reset_dir(work).map_err(|source| LoadError::Work {
            path: work.join("fold"),
            source,
        })?;
        let mut tokens = HashMap::new();
        for key in store.list(keys::TOKENS).await? {
            if let (Some(hash), Some(record)) = (
                key.strip_prefix("tokens/")
                    .and_then(|k| k.strip_suffix(".json")),
                store.get_json::<TokenRecord>(&key).await?,
            ) {
                tokens.insert(hash.to_string(), record);
            }
        }
        let signer = crate::signing::load_key(&store, signer)
            .await
            .map_err(LoadError::Signing)?;
        let coordinator = Arc::new(Self {
            store,
            work: work.to_path_buf(),
            state: RwLock::new(state),
            tokens: RwLock::new(tokens),
            wake: Notify::new(),
            fusion_lock: Mutex::new(()),
            metrics: Arc::new(Metrics::default()),
            uploads: Default::default(),
            signer,
            base_norms: Default::default(),
            verified_files: Default::default(),
            revocations: Default::default(),
            upload_body_idle_ms: std::sync::atomic::AtomicU64::new(60_000),
            folder: Default::default(),
            validations: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        });
        let (latest, committed, keep) = {
            let s = coordinator.state.read().await;
            // Uploads of announced contributions awaiting their diff survive a restart; others go.
            let keep: Vec<PathBuf> = s
                .round
                .iter()
                .filter(|(_, c)| c.verdict.is_none())
                .map(|(id, c)| {
                    crate::upload::tail::path(
                        work,
                        s.round_iteration(),
                        id,
                        &c.manifest.diff_sha256,
                    )
                })
                .collect();
            (s.latest.clone(), s.committed, keep)
        };
        crate::upload::prune(&coordinator, &keep).await;
        coordinator.cache_base(&latest).await?;
        tracing::info!(committed, latest = latest.iteration, "deployment loaded");
        Ok(coordinator)
    }

    /// Re-reads the round state from the store (after a failure that may have left memory behind
    /// it); the running fusion flag and the tokens are kept.
    pub async fn reload(&self) -> Result<(), LoadError> {
        let mut s = self.state.write().await;
        let fresh = read_state(&self.store, s.fusing.clone()).await?;
        *s = fresh;
        let latest = s.latest.clone();
        drop(s);
        self.cache_base(&latest).await?;
        tracing::warn!(latest = latest.iteration, "state reloaded from the store");
        Ok(())
    }

    /// The deployment settings.
    pub async fn config(&self) -> DeploymentConfig {
        self.state.read().await.config.clone()
    }

    /// The token record stored under `hash`.
    pub async fn token(&self, hash: &str) -> Option<TokenRecord> {
        self.tokens.read().await.get(hash).cloned()
    }

    /// Records a token (already written to the store).
    pub async fn remember_token(&self, hash: String, record: TokenRecord) {
        self.tokens.write().await.insert(hash, record);
    }

    /// Finds a token's hash by its public id.
    pub async fn token_hash_by_id(&self, id: &str) -> Option<(String, TokenRecord)> {
        self.tokens
            .read()
            .await
            .iter()
            .find(|(_, r)| r.id == id)
            .map(|(h, r)| (h.clone(), r.clone()))
    }

    /// How long an upload body may send nothing before the request ends (408) and frees its slot.
    pub fn upload_body_idle(&self) -> std::time::Duration {
        let ms = self.upload_body_idle_ms.load(Ordering::Relaxed);
        std::time::Duration::from_millis(ms)
    }

    /// Sets [`Coordinator::upload_body_idle`] (default 60 s).
    pub fn set_upload_body_idle(&self, idle: std::time::Duration) {
        let ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX).max(1);
        self.upload_body_idle_ms.store(ms, Ordering::Relaxed);
    }

    /// Remembers that `contributor`'s token was revoked while a fusion ran.
    pub fn defer_revocation(&self, contributor: &str) {
        let mut r = self.revocations.lock().unwrap_or_else(|e| e.into_inner());
        r.insert(contributor.to_string());
    }

    /// Takes the revocations deferred while a fusion ran.
    pub fn take_revocations(&self) -> std::collections::BTreeSet<String> {
        let mut r = self.revocations.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *r)
    }

    /// The body L2 norm of the base with weights `sha256`, if measured.
    pub fn base_norm(&self, sha256: &str) -> Option<f64> {
        let norms = self.base_norms.lock().unwrap_or_else(|e| e.into_inner());
        norms.get(sha256).copied()
    }

    /// Remembers a base's body L2 norm.
    pub fn remember_base_norm(&self, sha256: &str, norm: f64) {
        let mut norms = self.base_norms.lock().unwrap_or_else(|e| e.into_inner());
        norms.insert(sha256.to_string(), norm);
    }

    /// Local directory of a cached base.
    pub fn base_dir(&self, iteration: u64) -> PathBuf {
        self.work.join("bases").join(format!("{iteration:06}"))
    }

    /// Makes sure base `manifest` is in the local cache, every file verified against its hash.
    pub async fn cache_base(&self, manifest: &BaseManifest) -> Result<PathBuf, LoadError> {
        let dir = self.base_dir(manifest.iteration);
        let work_err = |source| LoadError::Work {
            path: dir.clone(),
            source,
        };
        tokio::fs::create_dir_all(&dir).await.map_err(work_err)?;
        for file in &manifest.files {
            let path = dir.join(&file.name);
            if self.checked_before(&path, &file.sha256, file.size).await
                || verified(&path, &file.sha256).await
            {
                self.remember_checked(&path, &file.sha256);
                continue;
            }
            let key = keys::base_file(manifest.iteration, &file.name);
            self.store.get_file(&key, &path).await?;
            if !verified(&path, &file.sha256).await {
                return Err(LoadError::Inconsistent(format!(
                    "{key} does not match the sha256 in its manifest"
                )));
            }
            self.remember_checked(&path, &file.sha256);
        }
        Ok(dir)
    }

    /// Whether `path` was hashed to `sha256` since start-up and still has `size` bytes.
    async fn checked_before(&self, path: &Path, sha256: &str, size: u64) -> bool {
        let known = {
            let checked = self
                .verified_files
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            checked.get(path).is_some_and(|s| s == sha256)
        };
        known
            && tokio::fs::metadata(path)
                .await
                .is_ok_and(|m| m.len() == size)
    }

    fn remember_checked(&self, path: &Path, sha256: &str) {
        let mut checked = self
            .verified_files
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        checked.insert(path.to_path_buf(), sha256.to_string());
    }
}

/// The state as the store has it: config, committed iterations, `latest` (rolled forward to the newest
/// commit unless an admin rollback or the promotion gate holds it back), the gate's candidate, and the
/// open round.
async fn read_state(store: &Store, fusing: FusingFlag) -> Result<State, LoadError> {
    let config: DeploymentConfig = store
        .get_json(keys::DEPLOYMENT)
        .await?
        .ok_or_else(|| LoadError::NotInitialised(store.url().to_string()))?;
    let mut bases = BTreeMap::new();
    for key in store.list(keys::ITERATIONS).await? {
        if keys::parse_iteration_record(&key).is_some() {
            if let Some(r) = store.get_json::<IterationRecord>(&key).await? {
                bases.insert(r.base_sha256, r.iteration);
            }
        }
    }
    let committed = bases
        .values()
        .copied()
        .max()
        .ok_or_else(|| LoadError::Inconsistent("no committed iteration".into()))?;
    let pointer = store.get_json::<LatestPointer>(keys::LATEST).await?;
    let latest_iteration = roll_forward(store, pointer, committed).await?;
    let latest: BaseManifest = store
        .get_json(&keys::base_file(latest_iteration, keys::BASE_MANIFEST))
        .await?
        .ok_or_else(|| {
            LoadError::Inconsistent(format!("iteration {latest_iteration} has no base manifest"))
        })?;
    let candidate = load_candidate(store, committed, latest.iteration).await?;
    let round = load_round(store, committed + 1).await?;
    let first_accepted_at = round
        .values()
        .filter(|c| c.counts())
        .filter_map(|c| match c.verdict {
            Some(Verdict::Accepted { at, .. }) => Some(at),
            _ => None,
        })
        .min();
    Ok(State {
        config,
        latest,
        committed,
        round,
        first_accepted_at,
        fusing,
        bases,
        candidate,
    })
}

/// The iteration to serve as latest. A pointer behind the newest commit without a rollback mark is a
/// crash between the commit and the switch: it is moved forward (and written back), unless the newest
/// commit is a gate candidate that was not promoted (the gate decides it).
async fn roll_forward(
    store: &Store,
    pointer: Option<LatestPointer>,
    committed: u64,
) -> Result<u64, StoreError> {
    let pointer = pointer.unwrap_or(LatestPointer::to(committed));
    // A rollback holds `latest` back only until something is committed after it.
    let rolled_back = pointer
        .rolled_back_at
        .is_some_and(|newest| committed <= newest);
    if pointer.iteration >= committed || rolled_back {
        return Ok(pointer.iteration);
    }
    let gate = store
        .get_json::<Promotion>(&keys::gate_record(committed))
        .await?;
    if gate.is_some_and(|p| p.state != PromotionState::Promoted) {
        return Ok(pointer.iteration);
    }
    tracing::warn!(
        from = pointer.iteration,
        to = committed,
        "latest was behind the newest commit (an interrupted switch): rolled forward"
    );
    store
        .put_json(keys::LATEST, &LatestPointer::to(committed))
        .await?;
    Ok(committed)
}

async fn verified(path: &Path, sha256: &str) -> bool {
    let path = path.to_path_buf();
    let expected = sha256.to_string();
    tokio::task::spawn_blocking(move || sha256_file(&path).is_ok_and(|h| h == expected))
        .await
        .unwrap_or(false)
}

/// The gate's undecided candidate, if the highest committed iteration is one. A record still
/// undecided although `latest` already reached the candidate is a promotion cut short by a crash
/// (`latest` moves first): it is completed here.
async fn load_candidate(
    store: &Store,
    committed: u64,
    latest: u64,
) -> Result<Option<Promotion>, StoreError> {
    let key = keys::gate_record(committed);
    match store.get_json::<Promotion>(&key).await? {
        Some(mut p) if !p.state.decided() && latest < committed => {
            if p.fused_at == 0 {
                // A record from before site evaluation: its deadline counts from now.
                p.fused_at = coldfuse_shared::api::now_unix();
            }
            Ok(Some(p))
        }
        Some(mut p) if !p.state.decided() => {
            p.state = PromotionState::Promoted;
            p.reason =
                Some("promoted; the record of the decision was completed after a restart".into());
            p.updated_at = coldfuse_shared::api::now_unix();
            // A statement signed before the crash would name the earlier state: none rather than that.
            p.receipt = None;
            store.put_json(&key, &p).await?;
            Ok(None)
        }
        _ => Ok(None),
    }
}

async fn load_round(
    store: &Store,
    iteration: u64,
) -> Result<BTreeMap<String, Contribution>, StoreError> {
    let mut round = BTreeMap::new();
    let prefix = keys::round_prefix(iteration);
    for key in store.list(&prefix).await? {
        let Some(rest) = key.strip_prefix(&format!("{prefix}/")) else {
            continue;
        };
        let Some((contributor, file)) = rest.split_once('/') else {
            continue;
        };
        if file != MANIFEST_FILE {
            continue;
        }
        if let Some(manifest) = store.get_json::<DiffManifest>(&key).await? {
            if manifest.check_fields().is_err() || manifest.contributor != contributor {
                // Written before announces were checked; it can never be accepted now.
                tracing::warn!(%key, "ignoring a stored manifest that fails the announce checks");
                continue;
            }
            let file = |name| keys::contribution_file(iteration, contributor, name);
            let verdict = store.get_json(&file(keys::VERDICT)).await?;
            let quarantined = store.get_json(&file(keys::QUARANTINE)).await?;
            round.insert(
                contributor.to_string(),
                Contribution {
                    manifest,
                    verdict,
                    quarantined,
                },
            );
        }
    }
    Ok(round)
}
