//! `coldfuse verify ITERATION`: replays the fusion of a committed iteration from the inputs its lineage
//! record names (parent base, every fused diff, fusion settings, server optimiser and its state) and
//! checks that the published base is the same bit for bit, or names the first tensor that differs.
//! Every input is checked against the hash the record or its manifest gives before it is used. Reads
//! through the API (the diffs need a token) or straight from the store (`--store URL`).
//!
//! Three steps: [`fetch`] the evidence, [`replay`] the fusion with the function the coordinator
//! fused with, [`compare`] the result with what was published.

mod source;

use std::path::{Path, PathBuf};

use clap::Args;
use coldfuse_shared::{
    api::{BaseManifest, IterationRecord},
    diff::BASE_WEIGHTS,
    fusion::{self, RecordedDiff, ReplayInputs, Replayed, ServerOptimizer},
    hash::sha256_file,
    store::Store,
    tensorfile::first_difference,
};

use crate::client::Client;
pub use source::Source;

/// Arguments of `coldfuse verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The committed iteration to check (1 or later).
    pub iteration: u64,
    /// Read from this store (file:///dir, s3://bucket/prefix with AWS_* env) instead of the API.
    #[arg(long, env = "COLDFUSE_STORE")]
    pub store: Option<String>,
    /// Keep the downloaded inputs and the replayed base here (default: a temporary directory).
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
    /// Replaying the recorded inputs does not give the published weights.
    #[error("iteration {iteration} does not reproduce: the record says weights {recorded}, the published file has {published}, replaying its fusion gives {replayed}; published and replayed first differ at {difference}")]
    Differs {
        /// Iteration.
        iteration: u64,
        /// Hash of the replayed weights.
        replayed: String,
        /// Hash of the published weights file.
        published: String,
        /// Hash in the lineage record.
        recorded: String,
        /// The first differing tensor.
        difference: String,
    },
}

/// What a successful verification checked.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The iteration.
    pub iteration: u64,
    /// Its weights' hash, reproduced.
    pub base_sha256: String,
    /// Contributions replayed.
    pub contributions: usize,
    /// Tensors fused in the replay.
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
        "iteration {} verified: replaying the fusion of its {} recorded contributions ({} tensors) gives the published weights bit for bit (sha256 {})",
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
pub async fn verify(source: &Source, iteration: u64, work: &Path) -> anyhow::Result<Verified> {
    let evidence = fetch(source, iteration, work).await?;
    let replayed = replay(&evidence, work).await?;
    compare(source, &evidence, &replayed, work).await
}

/// Everything an iteration was fused from, downloaded and checked against its recorded hashes.
pub struct Evidence {
    /// The iteration checked (its record says the same).
    pub iteration: u64,
    /// The iteration's lineage record.
    pub record: IterationRecord,
    /// Its parent base's directory.
    pub parent_dir: PathBuf,
    /// The parent's weights hash.
    pub parent_sha256: String,
    /// The fused diffs.
    pub diffs: Vec<RecordedDiff>,
    /// The server optimiser.
    pub optimizer: ServerOptimizer,
    /// Its state after the parent iteration, when it had one.
    pub prev_state: Option<PathBuf>,
}

fn lineage(message: String) -> anyhow::Error {
    VerifyError::Lineage(message).into()
}

/// Downloads the inputs of iteration `iteration` into `work`, each checked against its record.
pub async fn fetch(source: &Source, iteration: u64, work: &Path) -> anyhow::Result<Evidence> {
    let record = source.record(iteration).await?;
    if record.iteration != iteration {
        return Err(lineage(format!(
            "the record of iteration {iteration} says it is iteration {}",
            record.iteration
        )));
    }
    let (Some(parent), Some(parent_sha)) = (record.parent, record.parent_sha256.clone()) else {
        return Err(VerifyError::Original(iteration).into());
    };
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
            source: None,
            manifest,
            staleness: c.staleness,
        });
    }

    let optimizer = record.server_optimizer.unwrap_or_default();
    let mut prev_state = None;
    if !optimizer.is_none() {
        if let Some(sha) = source.record(parent).await?.optimizer_state_sha256 {
            let path = work.join("optimizer-prev.safetensors");
            source.optimizer_state(parent, &path).await?;
            let what = format!("server-optimiser state of iteration {parent}");
            check_hash(&path, &what, &sha, "its lineage record").await?;
            prev_state = Some(path);
        }
    }
    Ok(Evidence {
        iteration,
        record,
        parent_dir,
        parent_sha256: parent_sha,
        diffs,
        optimizer,
        prev_state,
    })
}

/// Where [`replay`] writes the replayed base and optimiser state under `work`.
fn replay_paths(work: &Path, iteration: u64) -> (PathBuf, PathBuf) {
    (
        work.join(format!("replayed-{iteration:06}")),
        work.join("optimizer-replayed.safetensors"),
    )
}

/// Fuses the evidence again with the coordinator's own replay function.
pub async fn replay(evidence: &Evidence, work: &Path) -> anyhow::Result<Replayed> {
    let iteration = evidence.iteration;
    let fusion_config = evidence
        .record
        .fusion
        .clone()
        .ok_or_else(|| lineage(format!("iteration {iteration} records no fusion settings")))?;
    let (out, state_out) = replay_paths(work, iteration);
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    let (parent_dir, parent_sha256, diffs, optimizer, prev_state) = (
        evidence.parent_dir.clone(),
        evidence.parent_sha256.clone(),
        evidence.diffs.clone(),
        evidence.optimizer,
        evidence.prev_state.clone(),
    );
    let fold_order = evidence.record.fold_order.clone();
    Ok(tokio::task::spawn_blocking(move || {
        fusion::replay(
            &ReplayInputs {
                parent_dir: &parent_dir,
                parent_sha256: &parent_sha256,
                diffs: &diffs,
                fold_order: fold_order.as_deref(),
                fusion: &fusion_config,
                optimizer,
                prev_state: prev_state.as_deref(),
            },
            &out,
            &state_out,
        )
    })
    .await??)
}

/// Checks the replayed base, the published weights and the record against each other.
pub async fn compare(
    source: &Source,
    evidence: &Evidence,
    replayed: &Replayed,
    work: &Path,
) -> anyhow::Result<Verified> {
    let (record, iteration) = (&evidence.record, evidence.iteration);
    // The published weights themselves, not just their manifest, must be what the record says.
    let published_weights = work.join(format!("published-{iteration:06}.safetensors"));
    source
        .base_file(iteration, BASE_WEIGHTS, &published_weights)
        .await?;
    let (out, state_out) = replay_paths(work, iteration);
    let replayed_weights = out.join(BASE_WEIGHTS);
    let (a, b) = (published_weights.clone(), replayed_weights.clone());
    let (published_sha, replayed_sha) = tokio::task::spawn_blocking(move || {
        Ok::<_, std::io::Error>((sha256_file(&a)?, sha256_file(&b)?))
    })
    .await??;
    if replayed_sha != record.base_sha256 || published_sha != record.base_sha256 {
        let (a, b) = (published_weights, replayed_weights);
        let difference = tokio::task::spawn_blocking(move || first_difference(&a, &b)).await??;
        return Err(VerifyError::Differs {
            iteration,
            replayed: replayed_sha,
            published: published_sha,
            recorded: record.base_sha256.clone(),
            difference: difference.map_or_else(
                || "no tensor (the files differ outside the tensor data)".to_string(),
                |d| d.to_string(),
            ),
        }
        .into());
    }
    for fused in &replayed.report.contributions {
        let recorded = record
            .contributions
            .iter()
            .find(|c| c.contributor == fused.contributor);
        let Some(recorded) = recorded else {
            return Err(lineage(format!(
                "{} was fused but is not recorded",
                fused.contributor
            )));
        };
        if recorded.weight != fused.weight {
            return Err(lineage(format!(
                "{} has weight {} in the record, {} when replayed",
                fused.contributor, recorded.weight, fused.weight
            )));
        }
    }
    if let Some(sha) = &record.optimizer_state_sha256 {
        let what = "the replayed server-optimiser state";
        check_hash(&state_out, what, sha, "the lineage record").await?;
    }
    Ok(Verified {
        iteration,
        base_sha256: replayed_sha,
        contributions: record.contributions.len(),
        fused_tensors: replayed.report.fused_tensors,
    })
}
