//! Errors of the data readers: file-level errors, and bad rows with their file and line.

use std::{fmt, path::PathBuf};

use crate::tokenize::TokenizeError;

/// Why one row of a data file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadRowKind {
    /// The row has no value for a mapped column (too few fields, or a missing/null JSON key).
    MissingColumn(String),
    /// A text column is empty or only whitespace.
    EmptyText(String),
    /// The label is empty.
    EmptyLabel,
    /// A mapped column (or, in JSONL, the whole line) is not valid UTF-8; names which.
    InvalidUtf8(String),
    /// The line is not a record at all (not a JSON object).
    Malformed(String),
    /// A classification label outside the label vocabulary (e.g. a dev label never seen in training).
    UnknownLabel(String),
    /// A regression label that is not a finite number.
    NotANumber(String),
}

impl fmt::Display for BadRowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingColumn(c) => write!(f, "missing column {c}"),
            Self::EmptyText(c) => write!(f, "empty text in column {c}"),
            Self::EmptyLabel => write!(f, "empty label"),
            Self::InvalidUtf8(what) => write!(f, "invalid UTF-8 in {what}"),
            Self::Malformed(m) => write!(f, "malformed record: {m}"),
            Self::UnknownLabel(l) => write!(f, "unknown label {l:?}"),
            Self::NotANumber(l) => write!(f, "regression label {l:?} is not a finite number"),
        }
    }
}

/// A row that was left out, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// The data file.
    pub file: PathBuf,
    /// 1-based line where the record starts.
    pub line: u64,
    /// What is wrong with it.
    pub kind: BadRowKind,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.kind)
    }
}

/// An error while reading labelled data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CSV/TSV reader failed for a reason other than a bad row.
    #[error("{path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The csv error.
        source: csv::Error,
    },
    /// The format cannot be told from the file name and was not given.
    #[error("{0}: unknown data format (expected a .csv, .tsv or .jsonl file, or say which)")]
    UnknownFormat(PathBuf),
    /// A column named in the mapping is not in the header.
    #[error("{path}: no column {column:?} in the header (columns: {available:?})")]
    UnknownColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// The header's columns.
        available: Vec<String>,
    },
    /// The data specification is inconsistent.
    #[error("data specification: {0}")]
    Spec(String),
    /// A bad row under [`super::BadRowPolicy::Fail`].
    #[error("{0}")]
    BadRow(BadRow),
    /// Not one row of the file could be used: training on it would be a silent zero-step run.
    #[error("{path}: no usable rows ({bad} bad{})", first_bad(.examples))]
    NoUsableRows {
        /// The file.
        path: PathBuf,
        /// How many rows were bad.
        bad: usize,
        /// The first few bad rows.
        examples: Vec<BadRow>,
    },
    /// Classification needs at least two labels in the training data.
    #[error(
        "{path}: only one label ({label:?}) in the training data; classification needs two or more"
    )]
    SingleClass {
        /// The training file.
        path: PathBuf,
        /// The only label seen.
        label: String,
    },
    /// Too few rows to hold out a dev split.
    #[error("{path}: {rows} usable rows are too few to split off a dev set")]
    TooFewToSplit {
        /// The training file.
        path: PathBuf,
        /// Usable rows.
        rows: usize,
    },
    /// The texts could not be tokenized.
    #[error(transparent)]
    Tokenize(#[from] TokenizeError),
}

fn first_bad(examples: &[BadRow]) -> String {
    if examples.is_empty() {
        return String::new();
    }
    let lines: Vec<String> = examples.iter().map(|b| format!("\n  {b}")).collect();
    format!("; first:{}", lines.concat())
}
