//! `coldfuse verify ITERATION`: re-fuses a committed iteration from the inputs its lineage record names
//! (parent base, every fused diff, fusion settings, server optimiser and its state) and checks that the
//! published base is the same bit for bit, or names the first tensor that differs. Every input is checked
//! against the hash the record or its manifest gives before it is used. Reads through the API (the
//! diffs need a token) or straight from the store (`--store URL`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use coldfuse_coordinator::Store;
use coldfuse_shared::{
    api::{keys, BaseManifest, IterationRecord},
    diff::{DiffManifest, BASE_WEIGHTS, DIFF_FILE, MANIFEST_FILE},
    fusion::{replay, RecordedDiff, ReplayInputs},
    hash::sha256_file,
    tensorfile::first_difference,
};

use crate::client::Client;

/// Arguments of `coldfuse verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The committed iteration to check (1 or later).
    pub iteration: u64,
    /// Read from this store (file:///dir, s3://bucket/prefix with AWS_* env) instead of the API.
    #[arg(long, env = "COLDFUSE_STORE")]
    pub store: Option<String>,
    /// Keep the downloaded inputs and the re-fused base here (default: a temporary directory).
    #[arg(long)]
    pub work: Option<PathBuf>,
}

/// Why an iteration does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The iteration is the original model.
    #[error("iteration {0} is the original model: nothing was fused into it")]
    Original(u64),
    /// The lineage record and the published objects disagree.
    #[error("tampered lineage: {0}")]
    Lineage(String),
    /// A downloaded input does not have the hash its record or manifest gives.
    #[error("{what}: sha256 {actual}, but {source_of_truth} says {expected}")]
    Hash {
        /// The input.
        what: String,
        /// Its hash.
        actual: String,
        /// The expected hash.
        expected: String,
        /// Where the expected hash comes from.
        source_of_truth: String,
    },
    /// Re-fusing the recorded inputs does not give the published weights.
    #[error("iteration {iteration} does not reproduce: the record says weights {recorded}, the published file has {published}, re-fusing its inputs gives {refused}; published and re-fused first differ at {difference}")]
    Differs {
        /// Iteration.
        iteration: u64,
        /// Hash of the re-fused weights.
        refused: String,
        /// Hash of the published weights file.
        published: String,
        /// Hash in the lineage record.
        recorded: String,
        /// The first differing tensor.
        difference: String,
    },
}

/// Where the evidence is read from.
enum Source {
    Api(Client),
    Store(Store),
}

impl Source {
    async fn record(&self, iteration: u64) -> anyhow::Result<IterationRecord> {
        Ok(match self {
            Self::Api(c) => c.lineage_one(iteration).await?,
            Self::Store(s) => s
                .get_json(&keys::iteration_record(iteration))
                .await?
                .with_context(|| format!("iteration {iteration} is not committed"))?,
        })
    }

    async fn base_manifest(&self, iteration: u64) -> anyhow::Result<BaseManifest> {
        Ok(match self {
            Self::Api(c) => c.base(Some(iteration)).await?,
            Self::Store(s) => s
                .get_json(&keys::base_file(iteration, keys::BASE_MANIFEST))
                .await?
                .with_context(|| format!("no base manifest for iteration {iteration}"))?,
        })
    }

    async fn base_file(&self, iteration: u64, name: &str, dest: &Path) -> anyhow::Result<()> {
        match self {
            Self::Api(c) => {
                c.download(&format!("/v1/bases/{iteration}/files/{name}"), dest)
                    .await?
            }
            Self::Store(s) => s.get_file(&keys::base_file(iteration, name), dest).await?,
        }
        Ok(())
    }

    async fn diff_manifest(
        &self,
        iteration: u64,
        contributor: &str,
    ) -> anyhow::Result<DiffManifest> {
        Ok(match self {
            Self::Api(c) => c.fused_diff_manifest(iteration, contributor).await?,
            Self::Store(s) => s
                .get_json(&keys::contribution_file(
                    iteration,
                    contributor,
                    MANIFEST_FILE,
                ))
                .await?
                .with_context(|| format!("no manifest of {contributor} in round {iteration}"))?,
        })
    }

    async fn diff(&self, iteration: u64, contributor: &str, dest: &Path) -> anyhow::Result<()> {
        match self {
            Self::Api(c) => {
                let path = format!("/v1/lineage/{iteration}/contributions/{contributor}/diff");
                c.download(&path, dest).await?
            }
            Self::Store(s) => {
                s.get_file(
                    &keys::contribution_file(iteration, contributor, DIFF_FILE),
                    dest,
                )
                .await?
            }
        }
        Ok(())
    }

    async fn optimizer_state(&self, iteration: u64, dest: &Path) -> anyhow::Result<()> {
        match self {
            Self::Api(c) => {
                c.download(&format!("/v1/lineage/{iteration}/optimizer-state"), dest)
                    .await?
            }
            Self::Store(s) => s.get_file(&keys::optimizer_state(iteration), dest).await?,
        }
        Ok(())
    }
}

/// What a successful verification checked.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The iteration.
    pub iteration: u64,
    /// Its weights' hash, reproduced.
    pub base_sha256: String,
    /// Contributions re-fused.
    pub contributions: usize,
    /// Tensors re-fused.
    pub fused_tensors: usize,
}

/// Runs `coldfuse verify`.
pub async fn run(args: VerifyArgs, client: Option<Client>) -> anyhow::Result<()> {
    let source = match (&args.store, client) {
        (Some(url), _) => Source::Store(Store::open(url)?),
        (None, Some(c)) => Source::Api(c),
        (None, None) => anyhow::bail!(
            "no coordinator: pass --coordinator URL (or log in), or --store URL to read the store"
        ),
    };
    let temp;
    let work = match &args.work {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let v = verify(&source, args.iteration, &work).await?;
    println!(
        "iteration {} verified: re-fusing its {} recorded contributions ({} tensors) gives the published weights bit for bit (sha256 {})",
        v.iteration, v.contributions, v.fused_tensors, v.base_sha256
    );
    Ok(())
}

async fn check_hash(path: &Path, what: &str, expected: &str, truth: &str) -> anyhow::Result<()> {
    let p = path.to_path_buf();
    let actual = tokio::task::spawn_blocking(move || sha256_file(&p)).await??;
    if actual != expected {
        return Err(VerifyError::Hash {
            what: what.to_string(),
            actual,
            expected: expected.to_string(),
            source_of_truth: truth.to_string(),
        }
        .into());
    }
    Ok(())
}

/// Downloads every file of base `iteration` into `dir`, each checked against the manifest.
async fn fetch_base(source: &Source, m: &BaseManifest, dir: &Path) -> anyhow::Result<()> {
    crate::pull::check_manifest(m)?;
    std::fs::create_dir_all(dir)?;
    for f in &m.files {
        let path = dir.join(&f.name);
        source.base_file(m.iteration, &f.name, &path).await?;
        let what = format!("base {} file {}", m.iteration, f.name);
        check_hash(&path, &what, &f.sha256, "its manifest").await?;
    }
    Ok(())
}

/// Checks iteration `iteration` from `source`, using `work` for downloads.
async fn verify(source: &Source, iteration: u64, work: &Path) -> anyhow::Result<Verified> {
    let record = source.record(iteration).await?;
    let (Some(parent), Some(parent_sha)) = (record.parent, record.parent_sha256.as_deref()) else {
        return Err(VerifyError::Original(iteration).into());
    };
    let lineage = |m: String| anyhow::Error::from(VerifyError::Lineage(m));
    let parent_manifest = source.base_manifest(parent).await?;
    if parent_manifest.base_sha256 != parent_sha {
        return Err(lineage(format!(
            "iteration {iteration} names parent weights {parent_sha}, but base {parent} has {}",
            parent_manifest.base_sha256
        )));
    }
    let published = source.base_manifest(iteration).await?;
    if published.base_sha256 != record.base_sha256 {
        return Err(lineage(format!(
            "the record of iteration {iteration} says weights {}, its published manifest {}",
            record.base_sha256, published.base_sha256
        )));
    }
    let parent_dir = work.join(format!("base-{parent:06}"));
    fetch_base(source, &parent_manifest, &parent_dir).await?;

    let diffs_dir = work.join("diffs");
    std::fs::create_dir_all(&diffs_dir)?;
    let mut diffs = Vec::new();
    for c in &record.contributions {
        let manifest = source.diff_manifest(iteration, &c.contributor).await?;
        if manifest.diff_sha256 != c.diff_sha256 || manifest.contributor != c.contributor {
            return Err(lineage(format!(
                "lineage names diff {} of {}, the stored manifest {} of {}",
                c.diff_sha256, c.contributor, manifest.diff_sha256, manifest.contributor
            )));
        }
        let path = diffs_dir.join(format!("{}.safetensors", c.contributor));
        source.diff(iteration, &c.contributor, &path).await?;
        let what = format!("the diff of {}", c.contributor);
        check_hash(&path, &what, &c.diff_sha256, "the lineage record").await?;
        diffs.push(RecordedDiff {
            path,
            manifest,
            staleness: c.staleness,
        });
    }

    let optimizer = record.server_optimizer.unwrap_or_default();
    let prev_state = work.join("optimizer-prev.safetensors");
    let has_prev = if optimizer.is_none() {
        false
    } else {
        match source.record(parent).await?.optimizer_state_sha256 {
            Some(sha) => {
                source.optimizer_state(parent, &prev_state).await?;
                let what = format!("server-optimiser state of iteration {parent}");
                check_hash(&prev_state, &what, &sha, "its lineage record").await?;
                true
            }
            None => false,
        }
    };
    let fusion = record
        .fusion
        .clone()
        .ok_or_else(|| lineage(format!("iteration {iteration} records no fusion settings")))?;
    let out = work.join(format!("refused-{iteration:06}"));
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    let state_out = work.join("optimizer-refused.safetensors");
    let (p_dir, p_sha, o, s) = (
        parent_dir.clone(),
        parent_sha.to_string(),
        out.clone(),
        state_out.clone(),
    );
    let replayed = tokio::task::spawn_blocking(move || {
        replay(
            &ReplayInputs {
                parent_dir: &p_dir,
                parent_sha256: &p_sha,
                diffs: &diffs,
                fusion: &fusion,
                optimizer,
                prev_state: has_prev.then_some(prev_state.as_path()),
            },
            &o,
            &s,
        )
    })
    .await??;

    // The published weights themselves, not just their manifest, must be what the record says.
    let published_weights = work.join(format!("published-{iteration:06}.safetensors"));
    source
        .base_file(iteration, BASE_WEIGHTS, &published_weights)
        .await?;
    let refused = out.join(BASE_WEIGHTS);
    let (a, b) = (published_weights.clone(), refused.clone());
    let (published_sha, refused_sha) = tokio::task::spawn_blocking(move || {
        Ok::<_, std::io::Error>((sha256_file(&a)?, sha256_file(&b)?))
    })
    .await??;
    if refused_sha != record.base_sha256 || published_sha != record.base_sha256 {
        let (a, b) = (published_weights.clone(), refused.clone());
        let difference = tokio::task::spawn_blocking(move || first_difference(&a, &b)).await??;
        return Err(VerifyError::Differs {
            iteration,
            refused: refused_sha,
            published: published_sha,
            recorded: record.base_sha256.clone(),
            difference: difference.map_or_else(
                || "no tensor (the files differ outside the tensor data)".to_string(),
                |d| d.to_string(),
            ),
        }
        .into());
    }
    for (fused, recorded) in replayed.report.contributions.iter().map(|r| {
        (
            r,
            record
                .contributions
                .iter()
                .find(|c| c.contributor == r.contributor),
        )
    }) {
        let Some(recorded) = recorded else {
            return Err(lineage(format!(
                "{} was fused but is not recorded",
                fused.contributor
            )));
        };
        if recorded.weight != fused.weight {
            return Err(lineage(format!(
                "{} has weight {} in the record, {} when re-fused",
                fused.contributor, recorded.weight, fused.weight
            )));
        }
    }
    if let Some(sha) = &record.optimizer_state_sha256 {
        check_hash(
            &state_out,
            "the re-computed server-optimiser state",
            sha,
            "the lineage record",
        )
        .await?;
    }
    Ok(Verified {
        iteration,
        base_sha256: refused_sha,
        contributions: record.contributions.len(),
        fused_tensors: replayed.report.fused_tensors,
    })
}
