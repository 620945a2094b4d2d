//! Loading a training file (and a dev file or a seeded dev split) into labelled examples.

use std::path::{Path, PathBuf};

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{
    read::{read_rows, RawRow},
    BadRow, BadRowPolicy, DataError, DataSpec, LabelSpace, Target, TaskKind,
};

/// Bad rows logged one by one per file; the rest are only counted.
const LOGGED_BAD_ROWS: usize = 20;

/// One labelled example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The text.
    pub text: String,
    /// The second text of a pair, if the task has one.
    pub pair: Option<String>,
    /// The target.
    pub target: Target,
    /// 1-based line of the record in its file.
    pub line: u64,
}

/// What reading one file gave: usable rows and the bad ones left out.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The file.
    pub file: PathBuf,
    /// Usable rows.
    pub used: usize,
    /// Rows left out, with their lines.
    pub bad: Vec<BadRow>,
}

/// Where dev (validation) examples come from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevSource {
    /// No dev set.
    #[default]
    None,
    /// A separate file read with the same specification.
    File(PathBuf),
    /// A seeded random share of the training rows.
    Split {
        /// Share of the rows held out, in (0, 1).
        fraction: f64,
        /// Shuffle seed.
        seed: u64,
    },
}

/// Training (and dev) examples with their label space.
#[derive(Debug, Clone)]
pub struct TrainData {
    /// Training examples in file order.
    pub train: Vec<Example>,
    /// Dev examples, if any.
    pub dev: Option<Vec<Example>>,
    /// The label vocabulary, or regression.
    pub labels: LabelSpace,
    /// One report per file read.
    pub reports: Vec<LoadReport>,
}

impl TrainData {
    /// A seeded sample of the training rows: `train` rows to train on and the next `dev` rows as the
    /// dev set (an error when there are fewer than `train + dev` rows).
    pub fn sample(self, train: usize, dev: usize, seed: u64) -> Result<Self, DataError> {
        use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
        self.require_rows(train + dev)?;
        let mut rows = self.train;
        rows.shuffle(&mut StdRng::seed_from_u64(seed));
        let held = rows[train..train + dev].to_vec();
        rows.truncate(train);
        Ok(Self {
            train: rows,
            dev: Some(held),
            ..self
        })
    }

    /// Errors unless there are at least `need` training rows to split.
    pub(super) fn require_rows(&self, need: usize) -> Result<(), DataError> {
        if self.train.len() >= need {
            return Ok(());
        }
        Err(DataError::TooFewToSplit {
            path: self
                .reports
                .first()
                .map(|r| r.file.clone())
                .unwrap_or_default(),
            rows: self.train.len(),
        })
    }
}

/// Reads `train` (and the dev source) as `spec` says.
pub fn load(train: &Path, dev: &DevSource, spec: &DataSpec) -> Result<TrainData, DataError> {
    let read = read_rows(train, spec)?;
    let labels = label_space(spec, &read.rows)?;
    let (mut examples, report) = to_examples(train, read.rows, read.bad, &labels, spec)?;
    if let (LabelSpace::Classes(classes), None) = (&labels, &spec.labels) {
        if classes.len() < 2 {
            return Err(DataError::SingleClass {
                path: train.to_path_buf(),
                label: classes.first().cloned().unwrap_or_default(),
            });
        }
    }
    let mut reports = vec![report];
    let dev = match dev {
        DevSource::None => None,
        DevSource::File(path) => {
            let read = read_rows(path, spec)?;
            let (dev, report) = to_examples(path, read.rows, read.bad, &labels, spec)?;
            reports.push(report);
            Some(dev)
        }
        DevSource::Split { fraction, seed } => {
            let (rest, dev) = split(train, examples, *fraction, *seed)?;
            examples = rest;
            Some(dev)
        }
    };
    tracing::info!(
        train = examples.len(),
        dev = dev.as_ref().map_or(0, Vec::len),
        outputs = labels.num_outputs(),
        "data loaded"
    );
    Ok(TrainData {
        train: examples,
        dev,
        labels,
        reports,
    })
}

fn label_space(spec: &DataSpec, rows: &[RawRow]) -> Result<LabelSpace, DataError> {
    match (spec.task, &spec.labels) {
        (TaskKind::Regression, Some(_)) => Err(DataError::Spec(
            "a label vocabulary was given for a regression task".into(),
        )),
        (TaskKind::Regression, None) => Ok(LabelSpace::Regression),
        (TaskKind::Classification, Some(fixed)) => {
            let mut sorted = fixed.clone();
            sorted.sort();
            sorted.dedup();
            if sorted.len() != fixed.len() || fixed.len() < 2 {
                return Err(DataError::Spec(format!(
                    "the label vocabulary needs two or more distinct labels, got {fixed:?}"
                )));
            }
            Ok(LabelSpace::Classes(fixed.clone()))
        }
        (TaskKind::Classification, None) => Ok(LabelSpace::from_labels(
            rows.iter().map(|r| r.label.as_str()),
        )),
    }
}

/// Turns raw rows into examples under `labels`; rows whose label does not fit join the bad rows.
fn to_examples(
    path: &Path,
    rows: Vec<RawRow>,
    mut bad: Vec<BadRow>,
    labels: &LabelSpace,
    spec: &DataSpec,
) -> Result<(Vec<Example>, LoadReport), DataError> {
    let mut examples = Vec::with_capacity(rows.len());
    for row in rows {
        match labels.target(&row.label) {
            Ok(target) => examples.push(Example {
                text: row.text,
                pair: row.pair,
                target,
                line: row.line,
            }),
            Err(kind) => bad.push(BadRow {
                file: path.to_path_buf(),
                line: row.line,
                kind,
            }),
        }
    }
    bad.sort_by_key(|b| b.line);
    if spec.bad_rows == BadRowPolicy::Fail {
        if let Some(first) = bad.first() {
            return Err(DataError::BadRow(first.clone()));
        }
    }
    for b in bad.iter().take(LOGGED_BAD_ROWS) {
        tracing::warn!(file = %b.file.display(), line = b.line, reason = %b.kind, "bad row left out");
    }
    if bad.len() > LOGGED_BAD_ROWS {
        tracing::warn!(
            file = %path.display(),
            more = bad.len() - LOGGED_BAD_ROWS,
            "more bad rows left out"
        );
    }
    if examples.is_empty() {
        return Err(DataError::NoUsableRows {
            path: path.to_path_buf(),
            bad: bad.len(),
            examples: bad.iter().take(5).cloned().collect(),
        });
    }
    let report = LoadReport {
        file: path.to_path_buf(),
        used: examples.len(),
        bad,
    };
    Ok((examples, report))
}

/// Holds out `fraction` of the examples (at least one, leaving at least one), chosen by a seeded
/// shuffle; both parts keep file order.
fn split(
    path: &Path,
    examples: Vec<Example>,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<Example>, Vec<Example>), DataError> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(DataError::Spec(format!(
            "dev fraction {fraction} must be between 0 and 1"
        )));
    }
    let n = examples.len();
    if n < 2 {
        return Err(DataError::TooFewToSplit {
            path: path.to_path_buf(),
            rows: n,
        });
    }
    let n_dev = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut is_dev = vec![false; n];
    for &i in &order[..n_dev] {
        is_dev[i] = true;
    }
    let (mut train, mut dev) = (Vec::with_capacity(n - n_dev), Vec::with_capacity(n_dev));
    for (example, dev_row) in examples.into_iter().zip(is_dev) {
        if dev_row {
            dev.push(example);
        } else {
            train.push(example);
        }
    }
    Ok((train, dev))
}
