//! Label vocabularies (classification) and float targets (regression).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{BadRowKind, TaskKind};

/// What the head predicts: one of named classes, or one float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelSpace {
    /// Class names in output order (logit `i` is `classes[i]`).
    Classes(Vec<String>),
    /// A single float output.
    Regression,
}

impl LabelSpace {
    /// A deterministic vocabulary from the labels seen: numeric order when every label is an integer
    /// (`2` before `10`), byte order otherwise.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Self {
        let set: BTreeSet<&str> = labels.into_iter().collect();
        let mut classes: Vec<String> = set.into_iter().map(str::to_string).collect();
        let ints: Option<Vec<i128>> = classes.iter().map(|c| c.parse().ok()).collect();
        if let Some(ints) = ints {
            let mut pairs: Vec<(i128, String)> = ints.into_iter().zip(classes).collect();
            pairs.sort();
            classes = pairs.into_iter().map(|(_, c)| c).collect();
        }
        Self::Classes(classes)
    }

    /// The empty space for a task before any label is seen (regression needs none).
    pub fn for_task(task: TaskKind, classes: Vec<String>) -> Self {
        match task {
            TaskKind::Classification => Self::Classes(classes),
            TaskKind::Regression => Self::Regression,
        }
    }

    /// Number of head outputs: the class count, or 1 for regression.
    pub fn num_outputs(&self) -> usize {
        match self {
            Self::Classes(c) => c.len(),
            Self::Regression => 1,
        }
    }

    /// Whether this is a regression task.
    pub fn is_regression(&self) -> bool {
        matches!(self, Self::Regression)
    }

    /// The target of a label as written, or why it cannot be used.
    pub fn target(&self, label: &str) -> Result<Target, BadRowKind> {
        match self {
            Self::Classes(classes) => classes
                .iter()
                .position(|c| c == label)
                .map(|i| Target::Class(i as u32))
                .ok_or_else(|| BadRowKind::UnknownLabel(label.to_string())),
            Self::Regression => match label.parse::<f32>() {
                Ok(v) if v.is_finite() => Ok(Target::Value(v)),
                _ => Err(BadRowKind::NotANumber(label.to_string())),
            },
        }
    }
}

/// The training target of one example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Index into [`LabelSpace::Classes`].
    Class(u32),
    /// A regression value.
    Value(f32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_labels_sort_numerically_others_by_bytes() {
        let space = LabelSpace::from_labels(["10", "2", "1", "2"]);
        assert_eq!(
            space,
            LabelSpace::Classes(vec!["1".into(), "2".into(), "10".into()])
        );
        let space = LabelSpace::from_labels(["spam", "ham", "Ham"]);
        assert_eq!(
            space,
            LabelSpace::Classes(vec!["Ham".into(), "ham".into(), "spam".into()])
        );
    }

    #[test]
    fn targets() {
        let space = LabelSpace::from_labels(["neg", "pos"]);
        assert_eq!(space.target("pos"), Ok(Target::Class(1)));
        assert_eq!(
            space.target("neutral"),
            Err(BadRowKind::UnknownLabel("neutral".into()))
        );
        assert_eq!(LabelSpace::Regression.target("3.5"), Ok(Target::Value(3.5)));
        assert!(LabelSpace::Regression.target("NaN").is_err());
        assert!(LabelSpace::Regression.target("high").is_err());
    }
}
