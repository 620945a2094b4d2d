//! Tasks for `eval`, `demo` and `gate evaluate`: a name plus a labelled data file, read like
//! `coldfuse train` reads one. A [`Registry`] holds the tasks given on the command line (`--task
//! NAME=PATH` with the `--task-*` column flags, repeatable) or in a tasks file (`--tasks-file`, TOML),
//! and the built-in tasks: real data installed from PyPI by `scripts/assets.sh`, each a distinct task
//! family (SMS spam, CoNLL-2010 hedge cues, SpamAssassin email spam, Pang & Lee sentence polarity, BBC
//! News topics in 5 classes), resolved only when named. By default the demo's first three contribute
//! and the last two are held out; a task is never both.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use coldfuse_shared::data::{
    self, Column, Columns, DataSpec, DevSource, Draws, Format, TaskKind, TrainData,
};
use serde::Deserialize;

/// Rows a task needs at least: a quarter of them for dev, the rest to train on, two of each at least.
pub const MIN_ROWS: usize = 8;

/// A task and how to read its file.
#[derive(Debug, Clone)]
pub struct Task {
    /// Short name.
    pub name: String,
    /// The data file.
    pub file: PathBuf,
    /// How to read it (format, header, columns).
    pub spec: DataSpec,
}

impl Task {
    /// The metric its scores are in: accuracy for classification, Pearson's r for regression.
    pub fn metric(&self) -> &'static str {
        match self.spec.task {
            TaskKind::Classification => "accuracy",
            TaskKind::Regression => "pearson",
        }
    }

    /// Up to `train` training and `dev` dev rows, sampled with `seed` (a small task keeps a quarter
    /// of its rows for dev and trains on the rest).
    pub fn sample(&self, train: usize, dev: usize, seed: u64) -> anyhow::Result<TrainData> {
        let (all, train, dev) = self.load(train, dev)?;
        Ok(all.sample(train, dev, seed)?)
    }

    /// Up to `train` training and `dev` dev rows of shard `index` of `of` (disjoint shards of the
    /// task's rows, one per site sharing the task), sampled with `seed` (a small shard keeps a
    /// quarter of its rows for dev and trains on the rest).
    pub fn shard_sample(
        &self,
        index: usize,
        of: usize,
        train: usize,
        dev: usize,
        seed: u64,
    ) -> anyhow::Result<TrainData> {
        let (all, _, _) = self.load(0, 0)?;
        let shard = all.shard(index, of);
        let rows = shard.train.len();
        let dev = dev.min(rows / 4);
        let train = train.min(rows - dev);
        Ok(shard.sample(train, dev, seed)?)
    }

    /// One dev set of up to `dev` rows, the same for every seed, and a draw of up to `train` other
    /// rows per seed (a small task keeps a quarter of its rows for dev).
    pub fn draws(&self, train: usize, dev: usize, seeds: &[u64]) -> anyhow::Result<Draws> {
        let (all, train, dev) = self.load(train, dev)?;
        Ok(all.draws(train, dev, seeds)?)
    }

    /// Every row, with the training and dev sizes a small task can afford; a task with fewer than
    /// [`MIN_ROWS`] usable rows is refused, naming its file (as the loader refuses one with a single
    /// class, an unknown column or no usable row).
    fn load(&self, train: usize, dev: usize) -> anyhow::Result<(TrainData, usize, usize)> {
        let all = data::load(&self.file, &DevSource::None, &self.spec)
            .with_context(|| format!("reading task {}", self.name))?;
        let rows = all.train.len();
        if rows < MIN_ROWS {
            bail!(
                "task {}: {} has {rows} usable rows; a task needs at least {MIN_ROWS} (a quarter \
                 of them for dev)",
                self.name,
                self.file.display()
            );
        }
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
/// Held-out tasks unless `--heldout-task` says otherwise (and no task comes from a file).
pub const DEFAULT_HELDOUT: [&str; 2] = ["polarity", "bbc-news"];
/// The built-in tasks' names.
pub const BUILTIN: [&str; 5] = ["sms-spam", "hedge", "email-spam", "polarity", "bbc-news"];

/// The built-in task `name`, its file found through the variables `scripts/assets.sh` exports.
fn builtin(name: &str) -> Option<anyhow::Result<Task>> {
    let corpus = |file: &str| env_path("COLDFUSE_CORPORA").map(|d| d.join(file));
    let (file, format) = match name {
        "sms-spam" => (env_path("COLDFUSE_SMS_SPAM"), Format::Tsv),
        "hedge" => (corpus("uncertainty-conll2010.csv"), Format::Csv),
        "email-spam" => (corpus("spam-apache.csv"), Format::Csv),
        "polarity" => (corpus("polarity-en-pang&lee2.csv"), Format::Csv),
        "bbc-news" => (env_path("COLDFUSE_BBC_NEWS"), Format::Tsv),
        _ => return None,
    };
    Some(file.map(|file| Task {
        name: name.to_string(),
        file,
        spec: DataSpec::label_then_text(format),
    }))
}

/// Tasks from data files: `--task NAME=PATH` (repeatable, read with the `--task-*` flags) and a
/// tasks file.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Tasks from files")]
pub struct TaskArgs {
    /// A task from a labelled data file, as NAME=PATH (repeatable): CSV, TSV or JSONL, read with
    /// the --task-* flags. Named by --heldout-task / --contributor-task; without --heldout-task,
    /// the tasks from files are the held-out tasks.
    #[arg(long, value_name = "NAME=PATH")]
    pub task: Vec<String>,
    /// A TOML file of tasks, each `[[task]]` with `name`, `path` (relative to the file) and
    /// optionally `format`, `header`, `text`, `pair`, `label` (column names or 0-based positions)
    /// and `kind` (classification or regression).
    #[arg(long, value_name = "FILE")]
    pub tasks_file: Option<PathBuf>,
    /// Format of the --task files: csv, tsv or jsonl (default: from the extension).
    #[arg(long)]
    pub task_format: Option<Format>,
    /// The --task CSV/TSV files have no header row (give columns as 0-based positions).
    #[arg(long)]
    pub task_no_header: bool,
    /// Column (name or 0-based position) holding the text in the --task files.
    #[arg(long, default_value = "text")]
    pub task_text_column: Column,
    /// Column holding the second text of a pair in the --task files, if any.
    #[arg(long)]
    pub task_pair_column: Option<Column>,
    /// Column holding the label in the --task files.
    #[arg(long, default_value = "label")]
    pub task_label_column: Column,
    /// The --task files have float labels (regression, scored by Pearson's r) instead of classes.
    #[arg(long)]
    pub task_regression: bool,
}

/// One `[[task]]` of a tasks file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskEntry {
    name: String,
    path: PathBuf,
    format: Option<Format>,
    header: Option<bool>,
    text: Option<Column>,
    pair: Option<Column>,
    label: Option<Column>,
    kind: Option<TaskKind>,
}

/// A tasks file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TasksFile {
    task: Vec<TaskEntry>,
}

/// The tasks a run can name: those from files, then the built-in ones.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    from_files: Vec<Task>,
}

impl Registry {
    /// The tasks `args` gives; names must be unique and not a built-in task's.
    pub fn new(args: &TaskArgs) -> anyhow::Result<Self> {
        let mut from_files = Vec::new();
        let spec = DataSpec {
            format: args.task_format,
            header: !args.task_no_header,
            columns: Columns {
                text: args.task_text_column.clone(),
                text_pair: args.task_pair_column.clone(),
                label: args.task_label_column.clone(),
            },
            task: if args.task_regression {
                TaskKind::Regression
            } else {
                TaskKind::Classification
            },
            ..DataSpec::default()
        };
        for given in &args.task {
            let (name, path) = given
                .split_once('=')
                .with_context(|| format!("--task {given:?}: write it as NAME=PATH"))?;
            from_files.push(Task {
                name: name.to_string(),
                file: PathBuf::from(path),
                spec: spec.clone(),
            });
        }
        if let Some(file) = &args.tasks_file {
            from_files.extend(read_tasks_file(file)?);
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &from_files {
            let valid = !t.name.is_empty()
                && t.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid {
                bail!(
                    "task name {:?} ({}): use letters, digits, '-', '_' or '.'",
                    t.name,
                    t.file.display()
                );
            }
            if BUILTIN.contains(&t.name.as_str()) {
                bail!(
                    "task name {:?} ({}) is a built-in task's: choose another",
                    t.name,
                    t.file.display()
                );
            }
            if !seen.insert(t.name.clone()) {
                bail!("task {:?} is given twice", t.name);
            }
        }
        Ok(Self { from_files })
    }

    /// The tasks from files, in the order given.
    pub fn from_files(&self) -> &[Task] {
        &self.from_files
    }

    /// The task `name`: from a file, else built in.
    pub fn get(&self, name: &str) -> anyhow::Result<Task> {
        if let Some(t) = self.from_files.iter().find(|t| t.name == name) {
            return Ok(t.clone());
        }
        match builtin(name) {
            Some(task) => task,
            None => {
                let mut known: Vec<&str> =
                    self.from_files.iter().map(|t| t.name.as_str()).collect();
                known.extend(BUILTIN);
                bail!("unknown task {name:?}; known: {}", known.join(", "))
            }
        }
    }

    /// The tasks named in `names` (`default` when empty).
    pub fn select(&self, names: &[String], default: &[&str]) -> anyhow::Result<Vec<Task>> {
        if names.is_empty() {
            return default.iter().map(|n| self.get(n)).collect();
        }
        names.iter().map(|n| self.get(n)).collect()
    }

    /// The held-out tasks named in `names`; when none is named, the tasks from files, or else the
    /// built-in defaults.
    pub fn select_heldout(&self, names: &[String]) -> anyhow::Result<Vec<Task>> {
        if names.is_empty() && !self.from_files.is_empty() {
            return Ok(self.from_files.clone());
        }
        self.select(names, &DEFAULT_HELDOUT)
    }
}

/// The tasks of a TOML tasks file; relative paths are relative to the file.
fn read_tasks_file(path: &Path) -> anyhow::Result<Vec<Task>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed: TasksFile =
        toml::from_str(&text).with_context(|| format!("{}: not a tasks file", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(parsed
        .task
        .into_iter()
        .map(|e| {
            let defaults = Columns::default();
            Task {
                name: e.name,
                file: dir.join(e.path),
                spec: DataSpec {
                    format: e.format,
                    header: e.header.unwrap_or(true),
                    columns: Columns {
                        text: e.text.unwrap_or(defaults.text),
                        text_pair: e.pair,
                        label: e.label.unwrap_or(defaults.label),
                    },
                    task: e.kind.unwrap_or_default(),
                    ..DataSpec::default()
                },
            }
        })
        .collect())
}

/// The tasks' names, comma-separated (for what a run prints).
pub fn names(tasks: &[Task]) -> String {
    tasks
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tasks: TaskArgs,
    }

    fn registry(args: &[&str]) -> anyhow::Result<Registry> {
        let cli = Cli::try_parse_from(std::iter::once("eval").chain(args.iter().copied()))?;
        Registry::new(&cli.tasks)
    }

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn rows(n: usize, line: impl Fn(usize) -> String) -> String {
        (0..n).map(|i| line(i) + "\n").collect()
    }

    #[test]
    fn tasks_from_flags_and_a_tasks_file_load_with_their_own_columns() {
        let dir = tempfile::tempdir().unwrap();
        let csv = format!(
            "review,sentiment\n{}",
            rows(12, |i| format!(
                "review number {i},{}",
                ["pos", "neg"][i % 2]
            ))
        );
        let csv = write(dir.path(), "reviews.csv", &csv);
        let jsonl = rows(12, |i| {
            let gold = ["yes", "no", "maybe"][i % 3];
            serde_json::json!({"premise": format!("p {i}"), "hypothesis": format!("h {i}"), "gold": gold})
            .to_string()
        });
        write(dir.path(), "pairs.jsonl", &jsonl);
        let toml = "[[task]]\nname = \"pairs\"\npath = \"pairs.jsonl\"\ntext = \"premise\"\n\
                    pair = \"hypothesis\"\nlabel = \"gold\"\n";
        let tasks_file = write(dir.path(), "tasks.toml", toml);
        let mine = format!("mine={csv}");
        let r = registry(&[
            "--task",
            &mine,
            "--task-text-column",
            "review",
            "--task-label-column",
            "sentiment",
            "--tasks-file",
            &tasks_file,
        ])
        .unwrap();
        let heldout = r.select_heldout(&[]).unwrap();
        let names: Vec<&str> = heldout.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["mine", "pairs"],
            "tasks from files are the held-out default"
        );
        for task in &heldout {
            let draws = task.draws(4, 100, &[0, 1]).unwrap();
            assert_eq!(draws.dev.len(), 3, "a quarter of 12 rows for dev");
            assert_eq!(draws.draws.len(), 2);
        }
        let pairs = r.get("pairs").unwrap();
        let data = pairs.sample(8, 3, 0).unwrap();
        assert!(
            data.train.iter().all(|e| e.pair.is_some()),
            "the pair column is read"
        );
        let err = r.get("nope").unwrap_err().to_string();
        assert!(
            err.contains("mine, pairs, sms-spam") && err.contains("bbc-news"),
            "{err}"
        );
        assert_eq!(
            (r.get("mine").unwrap().metric(), pairs.metric()),
            ("accuracy", "accuracy")
        );
    }

    /// A regression task (float labels, as `train --regression`), from the tasks file's `kind` or
    /// `--task-regression`, is read as one and scored by Pearson's r.
    #[test]
    fn regression_tasks_from_the_tasks_file_and_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = rows(12, |i| {
            serde_json::json!({"text": format!("pair {i}"), "label": i as f64 / 4.0}).to_string()
        });
        let file = write(dir.path(), "sts.jsonl", &jsonl);
        let toml = "[[task]]\nname = \"sts\"\npath = \"sts.jsonl\"\nkind = \"regression\"\n";
        let tasks_file = write(dir.path(), "tasks.toml", toml);
        let by_flag = format!("sts2={file}");
        let r = registry(&[
            "--tasks-file",
            &tasks_file,
            "--task",
            &by_flag,
            "--task-regression",
        ])
        .unwrap();
        for name in ["sts", "sts2"] {
            let t = r.get(name).unwrap();
            assert_eq!(t.metric(), "pearson");
            let data = t.sample(8, 3, 0).unwrap();
            assert_eq!(data.labels, coldfuse_shared::data::LabelSpace::Regression);
        }
        let bad = write(
            dir.path(),
            "bad.toml",
            "[[task]]\nname = \"x\"\npath = \"sts.jsonl\"\nkind = \"ranking\"\n",
        );
        let err = format!("{:#}", registry(&["--tasks-file", &bad]).unwrap_err());
        assert!(err.contains("bad.toml") && err.contains("ranking"), "{err}");
    }

    #[test]
    fn bad_tasks_are_refused_with_errors_that_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let load_err = |name: &str, text: &str| {
            let path = write(dir.path(), name, text);
            let r = registry(&["--task", &format!("t={path}")]).unwrap();
            let err = r.get("t").unwrap().draws(4, 4, &[0]).unwrap_err();
            let err = format!("{err:#}");
            assert!(err.contains(&path), "{err}");
            err
        };
        let one_class = format!("text,label\n{}", rows(12, |i| format!("row {i},spam")));
        assert!(load_err("one.csv", &one_class).contains("only one label"));
        let few = format!("text,label\n{}", rows(5, |i| format!("row {i},{}", i % 2)));
        assert!(load_err("few.csv", &few).contains("5 usable rows"));
        let columns = format!("body,label\n{}", rows(12, |i| format!("row {i},{}", i % 2)));
        assert!(load_err("columns.csv", &columns).contains("no column"));
        assert!(load_err("empty.csv", "text,label\n").contains("no usable rows"));

        let err = registry(&["--task", "just-a-name"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("NAME=PATH"), "{err}");
        let err = registry(&["--task", "polarity=x.csv"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("built-in"), "{err}");
        let err = registry(&["--task", "a=x.csv", "--task", "a=y.csv"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("given twice"), "{err}");
        let err = registry(&["--task", "a/b=x.csv"]).unwrap_err().to_string();
        assert!(err.contains("letters, digits"), "{err}");
        let bad_file = write(
            dir.path(),
            "bad.toml",
            "[[task]]\nname = \"x\"\npaht = \"y\"\n",
        );
        let err = registry(&["--tasks-file", &bad_file]).unwrap_err();
        assert!(format!("{err:#}").contains("not a tasks file"), "{err:#}");
    }
}
