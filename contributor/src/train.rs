//! `coldfuse train`: fine-tune a base on local labelled data and write the contribution (body diff,
//! manifest, and a local report) to a directory. Only the diff and the manifest are ever uploaded.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use coldfuse_shared::{
    data::TrainData,
    diff::{BaseRef, ContributionInfo, DiffBuilder, DiffManifest},
    train::{fine_tune, DeviceChoice, RunOptions, TrainConfig},
    ModelDir,
};
use serde::Serialize;

use crate::{
    args::{DiffArgs, JobArgs},
    login::contributor_id,
    pull::{pull, Pulled},
    settings::Settings,
};

/// Arguments of `coldfuse train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Data, hyper-parameters, diff and contributor.
    #[command(flatten)]
    pub job: JobArgs,
    /// Fine-tune this local HF model dir instead of pulling the coordinator's base (works offline).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Base iteration to pull (default: the latest).
    #[arg(long, conflicts_with = "base")]
    pub iteration: Option<u64>,
    /// Where to write diff.safetensors, manifest.json and report.json (must not exist).
    #[arg(long, default_value = "coldfuse-diff")]
    pub out: PathBuf,
}

/// Runs `coldfuse train`: the base from `--base` or pulled, then the contribution written to `--out`.
pub async fn train(args: TrainArgs, settings: &Settings) -> anyhow::Result<()> {
    let job = args.job;
    let cfg = job.hyper.config()?;
    let data = job.data.load(cfg.seed)?;
    let (base, client) = match &args.base {
        Some(dir) => (BaseSource::local(dir)?, None),
        None => {
            let client = settings
                .client()
                .context("no --base given, so the base comes from the coordinator")?;
            let pulled = pull(&client, &settings.cache_dir, args.iteration).await?;
            (BaseSource::pulled(&pulled), Some(client))
        }
    };
    let contributor = contributor_id(job.contributor, settings, client.as_ref()).await?;
    let (device, diff, out) = (job.hyper.device, job.diff, args.out);
    let out_c = out.clone();
    let report = tokio::task::spawn_blocking(move || {
        train_contribution(&base, &data, &cfg, device, &diff, &contributor, &out_c)
    })
    .await??;
    print_report(&report, &out);
    println!("next: coldfuse submit {}", out.display());
    Ok(())
}

/// The base a contribution is computed against.
#[derive(Debug, Clone)]
pub struct BaseSource {
    /// Its HF model dir.
    pub dir: PathBuf,
    /// Its identity in the manifest.
    pub base_ref: BaseRef,
}

impl BaseSource {
    /// A local model dir, identified by its weights' hash.
    pub fn local(dir: &Path) -> anyhow::Result<Self> {
        let weights = dir.join(coldfuse_shared::diff::BASE_WEIGHTS);
        let sha256 = coldfuse_shared::hash::sha256_file(&weights)
            .with_context(|| format!("hashing {}", weights.display()))?;
        let id = dir
            .file_name()
            .map_or_else(|| "local".into(), |n| n.to_string_lossy().into_owned());
        Ok(Self {
            dir: dir.to_path_buf(),
            base_ref: BaseRef { id, sha256 },
        })
    }

    /// A base pulled from the coordinator, identified by its iteration and weights' hash.
    pub fn pulled(pulled: &Pulled) -> Self {
        Self {
            dir: pulled.dir.clone(),
            base_ref: BaseRef {
                id: format!("iteration-{}", pulled.manifest.iteration),
                sha256: pulled.manifest.base_sha256.clone(),
            },
        }
    }
}

/// What a training run produced, kept locally as `report.json` beside the diff.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// The base trained from.
    pub base: BaseRef,
    /// Optimizer steps.
    pub steps: usize,
    /// Training examples.
    pub num_examples: usize,
    /// Final metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Loss per step.
    pub loss_curve: Vec<f64>,
    /// Dev evaluations.
    pub evals: Vec<coldfuse_shared::train::EvalLog>,
    /// Global L2 norm of the diff before privacy (local only).
    pub dp_norm_before: Option<f64>,
    /// The manifest that goes to the coordinator.
    pub manifest: DiffManifest,
}

/// Fine-tunes `base` on `data` and writes `out/{diff.safetensors, manifest.json, report.json}`;
/// `out` is built beside itself and renamed into place, and must not exist yet.
pub fn train_contribution(
    base: &BaseSource,
    data: &TrainData,
    cfg: &TrainConfig,
    device: DeviceChoice,
    diff: &DiffArgs,
    contributor: &str,
    out: &Path,
) -> anyhow::Result<TrainReport> {
    if out.exists() {
        bail!(
            "{} already exists; choose another --out or remove it",
            out.display()
        );
    }
    let model = ModelDir::open(&base.dir)
        .with_context(|| format!("loading base {}", base.dir.display()))?;
    if cfg.linear_probe {
        bail!("a linear probe leaves the body unchanged: there is no diff to contribute");
    }
    let opts = RunOptions {
        device: device.open()?,
        ..RunOptions::default()
    };
    tracing::info!(
        base = %base.base_ref.sha256,
        examples = data.train.len(),
        dev = data.dev.as_ref().map_or(0, Vec::len),
        "fine-tuning"
    );
    let outcome = fine_tune(&model, data, cfg, &opts)?;
    let mut builder = DiffBuilder::new(diff.encoding)?;
    let dp_norm_before = match diff.dp() {
        Some(dp) => Some(
            builder
                .add_body_private(&model, &outcome.body, &dp, None)?
                .norm_before,
        ),
        None => {
            builder.add_body(&model, &outcome.body)?;
            None
        }
    };
    let metrics: BTreeMap<String, f64> = outcome
        .metrics
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let info = ContributionInfo {
        contributor: contributor.to_string(),
        num_examples: outcome.num_examples as u64,
        metrics: metrics.clone(),
    };
    let staging = crate::pull::staging_beside(out)?;
    let manifest = builder.finish(staging.path(), base.base_ref.clone(), model.arch.name, info)?;
    let report = TrainReport {
        base: base.base_ref.clone(),
        steps: outcome.steps,
        num_examples: outcome.num_examples,
        metrics,
        loss_curve: outcome.history.iter().map(|s| s.loss).collect(),
        evals: outcome.evals.clone(),
        dp_norm_before,
        manifest,
    };
    std::fs::write(
        staging.path().join(REPORT_FILE),
        serde_json::to_vec_pretty(&report)?,
    )?;
    std::fs::rename(staging.keep(), out).with_context(|| format!("writing {}", out.display()))?;
    Ok(report)
}

/// The local report's file name inside a contribution directory.
pub const REPORT_FILE: &str = "report.json";

/// Prints a run's outcome in a few lines.
pub fn print_report(report: &TrainReport, out: &Path) {
    let m = &report.manifest;
    println!(
        "trained {} steps on {} examples against base {} ({})",
        report.steps,
        report.num_examples,
        report.base.id,
        &report.base.sha256[..12.min(report.base.sha256.len())]
    );
    let metrics: Vec<String> = report
        .metrics
        .iter()
        .map(|(k, v)| format!("{k}={v:.4}"))
        .collect();
    println!("local metrics: {}", metrics.join(" "));
    println!(
        "diff: {} ({} tensors, {} bytes, {}{}) -> {}",
        &m.diff_sha256[..12],
        m.tensors.len(),
        m.diff_bytes,
        m.encoding,
        m.dp.map_or(String::new(), |d| format!(
            ", dp clip {} noise {}",
            d.clip, d.noise_multiplier
        )),
        out.display()
    );
}
