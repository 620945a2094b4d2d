//! Reading the mapped columns of CSV, TSV and JSONL files into raw rows; bad rows are collected with
//! their line numbers instead of stopping the read.

use std::path::Path;

use super::{BadRow, BadRowKind, Column, DataError, DataSpec, Format};

/// One usable row as read: texts and the label still as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawRow {
    /// 1-based line where the record starts.
    pub line: u64,
    pub text: String,
    pub pair: Option<String>,
    pub label: String,
}

/// Rows read from one file: the usable ones and the bad ones.
#[derive(Debug, Default)]
pub(crate) struct ReadRows {
    pub rows: Vec<RawRow>,
    pub bad: Vec<BadRow>,
}

/// Reads the mapped columns of every record of `path`.
pub(crate) fn read_rows(path: &Path, spec: &DataSpec) -> Result<ReadRows, DataError> {
    match spec.format_of(path)? {
        Format::Csv => read_delimited(path, spec, b','),
        Format::Tsv => read_delimited(path, spec, b'\t'),
        Format::Jsonl => read_jsonl(path, spec),
    }
}

/// Checks the texts and label of a row whose fields were found.
fn check_row(
    spec: &DataSpec,
    line: u64,
    text: String,
    pair: Option<String>,
    label: String,
) -> Result<RawRow, BadRowKind> {
    if text.trim().is_empty() {
        return Err(BadRowKind::EmptyText(spec.columns.text.to_string()));
    }
    if let (Some(p), Some(col)) = (&pair, &spec.columns.text_pair) {
        if p.trim().is_empty() {
            return Err(BadRowKind::EmptyText(col.to_string()));
        }
    }
    let label = label.trim().to_string();
    if label.is_empty() {
        return Err(BadRowKind::EmptyLabel);
    }
    Ok(RawRow {
        line,
        text,
        pair,
        label,
    })
}

fn csv_err(path: &Path) -> impl Fn(csv::Error) -> DataError + '_ {
    move |source| DataError::Csv {
        path: path.to_path_buf(),
        source,
    }
}

/// The field position of each mapped column, resolving names against the header.
fn positions(
    path: &Path,
    spec: &DataSpec,
    header: Option<&[String]>,
) -> Result<Vec<usize>, DataError> {
    spec.mapped()
        .into_iter()
        .map(|col| match (col, header) {
            (Column::Index(i), _) => Ok(*i),
            (Column::Name(name), Some(names)) => {
                names
                    .iter()
                    .position(|h| h == name)
                    .ok_or_else(|| DataError::UnknownColumn {
                        path: path.to_path_buf(),
                        column: name.clone(),
                        available: names.to_vec(),
                    })
            }
            (Column::Name(name), None) => Err(DataError::Spec(format!(
                "column {name:?} is named but the file has no header; give its position instead"
            ))),
        })
        .collect()
}

fn read_delimited(path: &Path, spec: &DataSpec, delimiter: u8) -> Result<ReadRows, DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(spec.header)
        .flexible(true)
        .from_path(path)
        .map_err(csv_err(path))?;
    let header = if spec.header {
        let names = reader.byte_headers().map_err(csv_err(path))?;
        Some(
            names
                .iter()
                .map(|n| {
                    let name = String::from_utf8_lossy(n);
                    name.trim_start_matches('\u{feff}').trim().to_string()
                })
                .collect::<Vec<_>>(),
        )
    } else {
        None
    };
    let pos = positions(path, spec, header.as_deref())?;
    let cols = spec.mapped();
    let mut out = ReadRows::default();
    for (index, record) in reader.byte_records().enumerate() {
        let record = record.map_err(csv_err(path))?;
        let line = record.position().map_or(index as u64 + 1, |p| p.line());
        let fields: Result<Vec<String>, BadRowKind> = pos
            .iter()
            .zip(&cols)
            .map(|(&i, col)| {
                let raw = record
                    .get(i)
                    .ok_or_else(|| BadRowKind::MissingColumn(col.to_string()))?;
                // The csv crate strips a BOM only from a header; a header-less file keeps it in field 0.
                let raw = match (index, i, header.is_none()) {
                    (0, 0, true) => raw.strip_prefix(b"\xef\xbb\xbf").unwrap_or(raw),
                    _ => raw,
                };
                String::from_utf8(raw.to_vec())
                    .map_err(|_| BadRowKind::InvalidUtf8(format!("column {col}")))
            })
            .collect();
        let checked = fields.and_then(|mut f| {
            let label = f.pop().unwrap_or_default();
            let pair = if spec.columns.text_pair.is_some() {
                f.pop()
            } else {
                None
            };
            let text = f.pop().unwrap_or_default();
            check_row(spec, line, text, pair, label)
        });
        push(&mut out, path, line, checked);
    }
    Ok(out)
}

fn push(out: &mut ReadRows, path: &Path, line: u64, row: Result<RawRow, BadRowKind>) {
    match row {
        Ok(r) => out.rows.push(r),
        Err(kind) => out.bad.push(BadRow {
            file: path.to_path_buf(),
            line,
            kind,
        }),
    }
}

/// A JSON value as a field: strings as they are; numbers and booleans (labels) as written.
fn json_field(
    obj: &serde_json::Map<String, serde_json::Value>,
    col: &Column,
) -> Result<String, BadRowKind> {
    let Column::Name(key) = col else {
        return Err(BadRowKind::MissingColumn(col.to_string()));
    };
    match obj.get(key) {
        None | Some(serde_json::Value::Null) => Err(BadRowKind::MissingColumn(col.to_string())),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Ok(b.to_string()),
        Some(_) => Err(BadRowKind::Malformed(format!(
            "column {col} is not a string, number or boolean"
        ))),
    }
}

fn read_jsonl(path: &Path, spec: &DataSpec) -> Result<ReadRows, DataError> {
    if let Some(col) = spec
        .mapped()
        .into_iter()
        .find(|c| matches!(c, Column::Index(_)))
    {
        return Err(DataError::Spec(format!(
            "column {col} is a position, but JSONL columns are keys"
        )));
    }
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    let mut out = ReadRows::default();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index as u64 + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let row = std::str::from_utf8(raw)
            .map_err(|_| BadRowKind::InvalidUtf8("the line".into()))
            .and_then(|text| {
                serde_json::from_str::<serde_json::Value>(text)
                    .map_err(|e| BadRowKind::Malformed(e.to_string()))
            })
            .and_then(|value| match value {
                serde_json::Value::Object(obj) => Ok(obj),
                _ => Err(BadRowKind::Malformed("not a JSON object".into())),
            })
            .and_then(|obj| {
                let text = json_field(&obj, &spec.columns.text)?;
                let pair = match &spec.columns.text_pair {
                    Some(col) => Some(json_field(&obj, col)?),
                    None => None,
                };
                let label = json_field(&obj, &spec.columns.label)?;
                check_row(spec, line, text, pair, label)
            });
        push(&mut out, path, line, row);
    }
    Ok(out)
}
