//! Real labelled tasks for contributors, sampled from the packages `scripts/assets.sh` installs and
//! written as JSONL (`{"text", "label"}`), each task from a different source.

use std::path::{Path, PathBuf};

use coldfuse_shared::data::{load, DataSpec, DevSource, Example, Format, Target};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

fn env_path(var: &str) -> PathBuf {
    std::env::var_os(var)
        .map(Into::into)
        .unwrap_or_else(|| panic!("{var} is not set: run `eval \"$(scripts/assets.sh)\"`"))
}

/// A task: its name and where its file lives, read as label column 0 and text column 1, no header.
#[derive(Debug, Clone)]
pub struct Task {
    /// Short name.
    pub name: &'static str,
    /// The source file.
    pub file: PathBuf,
    /// Its format.
    pub format: Format,
}

/// SMS spam (ham/spam), CoNLL-2010 hedge detection (1/-1) and Pang & Lee sentence polarity (1/-1).
pub fn three_tasks() -> Vec<Task> {
    let corpora = env_path("COLDFUSE_CORPORA");
    vec![
        Task {
            name: "sms",
            file: env_path("COLDFUSE_SMS_SPAM"),
            format: Format::Tsv,
        },
        Task {
            name: "hedge",
            file: corpora.join("uncertainty-conll2010.csv"),
            format: Format::Csv,
        },
        Task {
            name: "polarity",
            file: corpora.join("polarity-en-pang&lee2.csv"),
            format: Format::Csv,
        },
    ]
}

/// Rows of a task written as JSONL: `train` rows to `dir/NAME-train.jsonl`, `dev` rows to
/// `dir/NAME-dev.jsonl` (a seeded sample); answers both paths and the training texts.
pub fn write_split(
    task: &Task,
    dir: &Path,
    train: usize,
    dev: usize,
    seed: u64,
) -> (PathBuf, PathBuf, Vec<String>) {
    let spec = DataSpec::label_then_text(task.format);
    let data = load(&task.file, &DevSource::None, &spec).unwrap();
    let mut rows: Vec<Example> = data.train;
    rows.shuffle(&mut StdRng::seed_from_u64(seed));
    assert!(
        rows.len() >= train + dev,
        "{} has {} rows",
        task.name,
        rows.len()
    );
    let name = |t: &Target| match (t, &data.labels) {
        (Target::Class(i), coldfuse_shared::data::LabelSpace::Classes(names)) => {
            names[*i as usize].clone()
        }
        other => panic!("{}: not a classification row: {other:?}", task.name),
    };
    let write = |path: &Path, rows: &[Example]| {
        let lines: Vec<String> = rows
            .iter()
            .map(|r| serde_json::json!({"text": r.text, "label": name(&r.target)}).to_string())
            .collect();
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    };
    let train_path = dir.join(format!("{}-train.jsonl", task.name));
    let dev_path = dir.join(format!("{}-dev.jsonl", task.name));
    write(&train_path, &rows[..train]);
    write(&dev_path, &rows[train..train + dev]);
    let texts = rows[..train].iter().map(|r| r.text.clone()).collect();
    (train_path, dev_path, texts)
}
