//! The flags that say what a site trains on and how: data (`DataArgs`), hyper-parameters
//! (`HyperArgs`), how the diff is stored (`DiffArgs`), and what `train` and `run` share (`JobArgs`).

use std::path::PathBuf;

use anyhow::Context;
use coldfuse_shared::{
    data::{self, BadRowPolicy, Column, Columns, DataSpec, DevSource, Format, TaskKind, TrainData},
    diff::{DpConfig, Encoding},
    model::Precision,
    train::{DeviceChoice, EarlyStopping, Metric, TrainConfig},
};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

/// Which data to train on and how to read it.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Data")]
pub struct DataArgs {
    /// Training data: CSV, TSV or JSONL (format from the extension unless --format).
    #[arg(long)]
    pub data: PathBuf,
    /// Dev data to evaluate on (same format and columns).
    #[arg(long, conflicts_with = "dev_split")]
    pub dev: Option<PathBuf>,
    /// Hold out this share of the training rows as dev data (seeded by --seed).
    #[arg(long)]
    pub dev_split: Option<f64>,
    /// File format: csv, tsv or jsonl.
    #[arg(long)]
    pub format: Option<Format>,
    /// The CSV/TSV files have no header row (give columns as 0-based positions).
    #[arg(long)]
    pub no_header: bool,
    /// Column (name or 0-based position) holding the text.
    #[arg(long, default_value = "text")]
    pub text_column: Column,
    /// Column holding the second text of a pair (NLI, paraphrase), if any.
    #[arg(long)]
    pub pair_column: Option<Column>,
    /// Column holding the label.
    #[arg(long, default_value = "label")]
    pub label_column: Column,
    /// Float labels (regression, as STS-B) instead of classes.
    #[arg(long)]
    pub regression: bool,
    /// Stop at the first bad row instead of skipping and reporting it.
    #[arg(long)]
    pub strict: bool,
    /// Train on at most this many rows (a sample seeded by --seed).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Evaluate on at most this many dev rows.
    #[arg(long)]
    pub dev_limit: Option<usize>,
}

/// Hyper-parameters: the paper's defaults, a file, then flags.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Training")]
pub struct HyperArgs {
    /// Hyper-parameter file (TOML or JSON with the fields of TrainConfig); flags override it.
    #[arg(long)]
    pub hparams: Option<PathBuf>,
    /// Peak learning rate [default: 5e-5].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Passes over the data [default: 10].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Optimizer steps instead of epochs.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Examples per forward/backward pass [default: 32].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimizer step [default: 8, effective batch 256].
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Tokens per sequence; longer inputs are truncated [default: 128].
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Share of steps spent warming up [default: 0.06].
    #[arg(long)]
    pub warmup_ratio: Option<f64>,
    /// Decoupled weight decay [default: 0.01].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Seed of head init, data order, dev split and dropout [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evaluate every this many steps (default: each epoch).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Dev metric: accuracy, macro_f1, mcc, pearson, spearman or loss.
    #[arg(long)]
    pub metric: Option<String>,
    /// Stop when the dev metric has not improved for this many evaluations.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Device: auto, cpu, cuda or cuda:N (cuda needs a build with `--features cuda`).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Matmul precision: f32, or bf16 (autocast with f32 master weights and optimiser state; for GPUs)
    /// [default: f32].
    #[arg(long)]
    pub precision: Option<Precision>,
}

/// How the contribution is stored.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Contribution")]
pub struct DiffArgs {
    /// Diff encoding: f32, bf16, f16, int8 or topk:DENSITY (e.g. topk:0.1).
    #[arg(long, default_value = "bf16")]
    pub encoding: Encoding,
    /// Differential privacy: clip the whole diff to this global L2 norm before upload.
    #[arg(long, requires = "dp_noise")]
    pub dp_clip: Option<f64>,
    /// Differential privacy: add Gaussian noise of std DP_NOISE × DP_CLIP to every value.
    #[arg(long, requires = "dp_clip")]
    pub dp_noise: Option<f64>,
}

impl DiffArgs {
    /// The privacy settings, if asked for.
    pub fn dp(&self) -> Option<DpConfig> {
        Some(DpConfig {
            clip: self.dp_clip?,
            noise_multiplier: self.dp_noise?,
        })
    }
}

impl DataArgs {
    /// How the files are read (format, header, columns, task kind, bad rows).
    pub fn spec(&self) -> DataSpec {
        DataSpec {
            format: self.format,
            header: !self.no_header,
            columns: Columns {
                text: self.text_column.clone(),
                text_pair: self.pair_column.clone(),
                label: self.label_column.clone(),
            },
            task: if self.regression {
                TaskKind::Regression
            } else {
                TaskKind::Classification
            },
            labels: None,
            bad_rows: if self.strict {
                BadRowPolicy::Fail
            } else {
                BadRowPolicy::Skip
            },
        }
    }

    /// Reads the data as asked, reporting every bad row.
    pub fn load(&self, seed: u64) -> anyhow::Result<TrainData> {
        let spec = self.spec();
        let dev = match (&self.dev, self.dev_split) {
            (Some(path), _) => DevSource::File(path.clone()),
            (None, Some(fraction)) => DevSource::Split { fraction, seed },
            (None, None) => DevSource::None,
        };
        let mut loaded = data::load(&self.data, &dev, &spec)?;
        for report in &loaded.reports {
            for bad in &report.bad {
                tracing::warn!("skipped {bad}");
            }
            tracing::info!(file = %report.file.display(), used = report.used, skipped = report.bad.len(), "data read");
        }
        if let Some(n) = self.limit {
            loaded.train.shuffle(&mut StdRng::seed_from_u64(seed));
            loaded.train.truncate(n);
        }
        if let (Some(n), Some(dev)) = (self.dev_limit, loaded.dev.as_mut()) {
            dev.truncate(n);
        }
        Ok(loaded)
    }
}

impl HyperArgs {
    /// The training configuration: defaults, then the file, then flags.
    pub fn config(&self) -> anyhow::Result<TrainConfig> {
        fn set<T>(slot: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        let mut c = match &self.hparams {
            None => TrainConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let parsed = if path.extension().is_some_and(|e| e == "json") {
                    serde_json::from_str(&text).map_err(anyhow::Error::from)
                } else {
                    toml::from_str(&text).map_err(anyhow::Error::from)
                };
                parsed.with_context(|| format!("{}: bad hyper-parameters", path.display()))?
            }
        };
        set(&mut c.learning_rate, self.lr);
        set(&mut c.epochs, self.epochs);
        set(&mut c.batch_size, self.batch_size);
        set(&mut c.grad_accumulation, self.grad_accum);
        set(&mut c.max_len, self.max_len);
        set(&mut c.warmup_ratio, self.warmup_ratio);
        set(&mut c.weight_decay, self.weight_decay);
        set(&mut c.seed, self.seed);
        set(&mut c.precision, self.precision);
        if self.max_steps.is_some() {
            c.max_steps = self.max_steps;
        }
        if self.eval_every.is_some() {
            c.eval_every = self.eval_every;
        }
        if let Some(m) = &self.metric {
            let metric: Metric = serde_json::from_value(serde_json::Value::String(m.clone()))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "unknown metric {m:?} (accuracy, macro_f1, mcc, pearson, spearman, loss)"
                    )
                })?;
            c.metric = Some(metric);
        }
        if let Some(patience) = self.patience {
            c.early_stopping = Some(EarlyStopping {
                patience,
                ..EarlyStopping::default()
            });
        }
        c.validate()?;
        Ok(c)
    }
}

/// What `train` and `run` share: the data, the hyper-parameters, the diff, and who contributes.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The data.
    #[command(flatten)]
    pub data: DataArgs,
    /// The hyper-parameters.
    #[command(flatten)]
    pub hyper: HyperArgs,
    /// How the diff is stored.
    #[command(flatten)]
    pub diff: DiffArgs,
    /// Contributor id in the manifest (default: from login or the token).
    #[arg(long)]
    pub contributor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_hparams_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(&path, "learning_rate = 1e-4\nepochs = 2\nbatch_size = 8\n").unwrap();
        let args = HyperArgs {
            hparams: Some(path.clone()),
            epochs: Some(3),
            metric: Some("macro_f1".into()),
            patience: Some(2),
            ..HyperArgs::default()
        };
        let c = args.config().unwrap();
        assert_eq!(c.learning_rate, 1e-4);
        assert_eq!(c.epochs, 3);
        assert_eq!(c.batch_size, 8);
        assert_eq!(c.metric, Some(Metric::MacroF1));
        assert_eq!(c.early_stopping.unwrap().patience, 2);
        std::fs::write(&path, "lr = 1\n").unwrap();
        let err = args.config().unwrap_err();
        assert!(
            format!("{err:#}").contains("bad hyper-parameters"),
            "{err:#}"
        );
        let bad_metric = HyperArgs {
            metric: Some("auc".into()),
            ..HyperArgs::default()
        };
        assert!(bad_metric.config().is_err());
    }
}
