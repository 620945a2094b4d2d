//! Data readers on small files written here: formats, column mapping, labels, dev sets, every kind of
//! bad row with its line, and padded batches equal to the tokenizer's own.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use coldfuse_shared::{
    data::{
        load, BadRowKind, BadRowPolicy, Column, Columns, DataError, DataSpec, DevSource,
        EncodedSet, LabelSpace, Target, TaskKind,
    },
    TextTokenizer,
};
use tempfile::TempDir;

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn classes(names: &[&str]) -> LabelSpace {
    LabelSpace::Classes(names.iter().map(|s| s.to_string()).collect())
}

fn texts(examples: &[coldfuse_shared::data::Example]) -> Vec<&str> {
    examples.iter().map(|e| e.text.as_str()).collect()
}

fn bad_lines(data: &coldfuse_shared::data::TrainData, file: usize) -> Vec<(u64, BadRowKind)> {
    data.reports[file]
        .bad
        .iter()
        .map(|b| (b.line, b.kind.clone()))
        .collect()
}

#[test]
fn csv_with_bom_and_multiline_quoted_fields() {
    let dir = TempDir::new().unwrap();
    let csv = "\u{feff}\"label\",\"text\"\n\"pos\",\"a fine\nfilm, truly\"\n\"neg\",\"dull \"\"plot\"\"\"\n";
    let path = write(&dir, "reviews.csv", csv.as_bytes());
    let data = load(&path, &DevSource::None, &DataSpec::default()).unwrap();
    assert_eq!(data.labels, classes(&["neg", "pos"]));
    assert_eq!(texts(&data.train), ["a fine\nfilm, truly", "dull \"plot\""]);
    assert_eq!(data.train[0].target, Target::Class(1));
    assert_eq!(
        data.train[1].line, 4,
        "line numbers count the embedded newline"
    );
    assert!(data.reports[0].bad.is_empty());
}

#[test]
fn tsv_without_header_by_position_like_sms_spam() {
    let dir = TempDir::new().unwrap();
    let tsv = "\u{feff}ham\tsee you at 5\nspam\t\"WIN a \"\"free\"\" prize\"\nham\tok\n";
    let path = write(&dir, "sms.csv", tsv.as_bytes());
    let spec = DataSpec::label_then_text(coldfuse_shared::data::Format::Tsv);
    let data = load(&path, &DevSource::None, &spec).unwrap();
    assert_eq!(
        data.labels,
        classes(&["ham", "spam"]),
        "BOM stripped from field 0"
    );
    assert_eq!(
        texts(&data.train),
        ["see you at 5", "WIN a \"free\" prize", "ok"]
    );
    let named = DataSpec {
        columns: Columns::default(),
        ..spec
    };
    assert!(matches!(
        load(&path, &DevSource::None, &named),
        Err(DataError::Spec(_))
    ));
}

#[test]
fn jsonl_pairs_numeric_labels_and_columns_by_name() {
    let dir = TempDir::new().unwrap();
    let jsonl = concat!(
        "{\"premise\": \"A man sleeps.\", \"hypothesis\": \"A person rests.\", \"gold\": 0}\n",
        "\n",
        "{\"premise\": \"A dog runs.\", \"hypothesis\": \"A cat sits.\", \"gold\": 2}\r\n",
        "{\"premise\": \"Kids play.\", \"hypothesis\": \"Children are outside.\", \"gold\": 10}\n",
    );
    let path = write(&dir, "nli.jsonl", jsonl.as_bytes());
    let spec = DataSpec {
        columns: Columns {
            text: Column::name("premise"),
            text_pair: Some(Column::name("hypothesis")),
            label: Column::name("gold"),
        },
        ..DataSpec::default()
    };
    let data = load(&path, &DevSource::None, &spec).unwrap();
    assert_eq!(
        data.labels,
        classes(&["0", "2", "10"]),
        "integer labels sort numerically"
    );
    assert_eq!(data.train[1].pair.as_deref(), Some("A cat sits."));
    assert_eq!(data.train[2].target, Target::Class(2));
    assert_eq!(data.train[2].line, 4, "blank lines count");
}

#[test]
fn regression_labels_as_sts_b() {
    let dir = TempDir::new().unwrap();
    let tsv = "s1\ts2\tscore\nA plane takes off.\tAn air plane is taking off.\t5.000\nA man plays.\tA woman cuts.\t0.5\nx\ty\thigh\n";
    let path = write(&dir, "sts.tsv", tsv.as_bytes());
    let spec = DataSpec {
        task: TaskKind::Regression,
        columns: Columns {
            text: Column::name("s1"),
            text_pair: Some(Column::name("s2")),
            label: Column::name("score"),
        },
        ..DataSpec::default()
    };
    let data = load(&path, &DevSource::None, &spec).unwrap();
    assert_eq!(data.labels, LabelSpace::Regression);
    assert_eq!(data.train[1].target, Target::Value(0.5));
    assert_eq!(
        bad_lines(&data, 0),
        [(4, BadRowKind::NotANumber("high".into()))]
    );
}

#[test]
fn every_bad_row_kind_is_reported_with_its_line() {
    let dir = TempDir::new().unwrap();
    let mut csv = b"text,label\ngood one,pos\nonly text\n   ,neg\nno label,\n".to_vec();
    csv.extend_from_slice(b"bad \xff bytes,neg\nfine,neg\n");
    let path = write(&dir, "train.csv", &csv);
    let dev = write(&dir, "dev.csv", b"text,label\nnice,pos\nmeh,neutral\n");
    let data = load(&path, &DevSource::File(dev), &DataSpec::default()).unwrap();
    assert_eq!(texts(&data.train), ["good one", "fine"]);
    assert_eq!(
        bad_lines(&data, 0),
        [
            (3, BadRowKind::MissingColumn("\"label\"".into())),
            (4, BadRowKind::EmptyText("\"text\"".into())),
            (5, BadRowKind::EmptyLabel),
            (6, BadRowKind::InvalidUtf8("column \"text\"".into())),
        ]
    );
    let dev = data.dev.as_ref().unwrap();
    assert_eq!(texts(dev), ["nice"]);
    assert_eq!(
        bad_lines(&data, 1),
        [(3, BadRowKind::UnknownLabel("neutral".into()))]
    );
    let shown = data.reports[0].bad[3].to_string();
    assert!(
        shown.ends_with("train.csv:6: invalid UTF-8 in column \"text\""),
        "{shown}"
    );
}

#[test]
fn jsonl_bad_rows() {
    let dir = TempDir::new().unwrap();
    let mut jsonl = b"{\"text\": \"ok\", \"label\": \"a\"}\n[1, 2]\n{\"text\": \"x\"\n".to_vec();
    jsonl.extend_from_slice(b"{\"text\": \"\xc3\x28\", \"label\": \"a\"}\n");
    jsonl.extend_from_slice(
        b"{\"text\": null, \"label\": \"a\"}\n{\"text\": \"fine\", \"label\": \"b\"}\n",
    );
    let path = write(&dir, "t.jsonl", &jsonl);
    let data = load(&path, &DevSource::None, &DataSpec::default()).unwrap();
    assert_eq!(texts(&data.train), ["ok", "fine"]);
    let kinds = bad_lines(&data, 0);
    assert_eq!(
        kinds.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [2, 3, 4, 5]
    );
    assert!(matches!(kinds[0].1, BadRowKind::Malformed(_)));
    assert!(matches!(kinds[1].1, BadRowKind::Malformed(_)));
    assert_eq!(kinds[2].1, BadRowKind::InvalidUtf8("the line".into()));
    assert_eq!(kinds[3].1, BadRowKind::MissingColumn("\"text\"".into()));
}

#[test]
fn a_file_without_usable_rows_is_an_error() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "empty.csv", b"text,label\n,pos\nx,\n");
    let err = load(&path, &DevSource::None, &DataSpec::default()).unwrap_err();
    let DataError::NoUsableRows { bad, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*bad, 2);
    let msg = err.to_string();
    assert!(msg.contains("empty.csv:2: empty text"), "{msg}");
    let header_only = write(&dir, "header.csv", b"text,label\n");
    assert!(matches!(
        load(&header_only, &DevSource::None, &DataSpec::default()),
        Err(DataError::NoUsableRows { bad: 0, .. })
    ));
    let dev = write(&dir, "dev.csv", b"text,label\nx,unseen\n");
    let train = write(&dir, "train.csv", b"text,label\na,p\nb,q\n");
    assert!(matches!(
        load(&train, &DevSource::File(dev), &DataSpec::default()),
        Err(DataError::NoUsableRows { bad: 1, .. })
    ));
}

#[test]
fn file_level_errors() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", b"sentence,label\na,p\nb,q\n");
    let err = load(&path, &DevSource::None, &DataSpec::default()).unwrap_err();
    assert!(
        matches!(&err, DataError::UnknownColumn { column, .. } if column == "text"),
        "{err}"
    );
    let one = write(&dir, "one.csv", b"text,label\na,p\nb,p\n");
    assert!(matches!(
        load(&one, &DevSource::None, &DataSpec::default()),
        Err(DataError::SingleClass { .. })
    ));
    let odd = write(&dir, "data.txt", b"x");
    assert!(matches!(
        load(&odd, &DevSource::None, &DataSpec::default()),
        Err(DataError::UnknownFormat(_))
    ));
    let missing = dir.path().join("missing.csv");
    assert!(load(&missing, &DevSource::None, &DataSpec::default()).is_err());
    let strict = DataSpec {
        bad_rows: BadRowPolicy::Fail,
        ..DataSpec::default()
    };
    let bad = write(&dir, "bad.csv", b"text,label\na,p\n,q\nb,q\n");
    let err = load(&bad, &DevSource::None, &strict).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("bad.csv:3: empty text in column \"text\""),
        "{err}"
    );
}

#[test]
fn fixed_label_vocabulary_keeps_its_order() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", b"text,label\na,pos\nb,neg\nc,other\n");
    let spec = DataSpec {
        labels: Some(vec!["pos".into(), "neg".into()]),
        ..DataSpec::default()
    };
    let data = load(&path, &DevSource::None, &spec).unwrap();
    assert_eq!(data.labels, classes(&["pos", "neg"]));
    assert_eq!(data.train[1].target, Target::Class(1));
    assert_eq!(
        bad_lines(&data, 0),
        [(4, BadRowKind::UnknownLabel("other".into()))]
    );
}

fn many_rows(dir: &TempDir, n: usize) -> PathBuf {
    let mut csv = String::from("text,label\n");
    for i in 0..n {
        csv.push_str(&format!("text {i},{}\n", ["a", "b", "c"][i % 3]));
    }
    write(dir, "many.csv", csv.as_bytes())
}

#[test]
fn seeded_dev_split() {
    let dir = TempDir::new().unwrap();
    let path = many_rows(&dir, 100);
    let split = |seed| {
        let dev = DevSource::Split {
            fraction: 0.2,
            seed,
        };
        let data = load(&path, &dev, &DataSpec::default()).unwrap();
        let dev: Vec<u64> = data.dev.unwrap().iter().map(|e| e.line).collect();
        (data.train.len(), dev)
    };
    let (n_train, dev) = split(3);
    assert_eq!((n_train, dev.len()), (80, 20));
    assert!(dev.windows(2).all(|w| w[0] < w[1]), "dev keeps file order");
    assert_eq!(split(3).1, dev, "same seed, same split");
    assert_ne!(split(4).1, dev, "another seed, another split");
    let bad = DevSource::Split {
        fraction: 1.0,
        seed: 0,
    };
    assert!(matches!(
        load(&path, &bad, &DataSpec::default()),
        Err(DataError::Spec(_))
    ));
}

fn tokenizer(max_len: usize) -> TextTokenizer {
    TextTokenizer::from_dir(&common::fixture("roberta_tiny").join("model"), max_len).unwrap()
}

fn sentences(dir: &TempDir) -> PathBuf {
    let csv = "text,pair,label\n\
        ColD Fusion averages fine-tuned weights.,Short one.,x\n\
        Short one.,The movie was great.,y\n\
        Many sites improve one shared encoder together without sharing data.,Markets were calm.,x\n";
    write(dir, "s.csv", csv.as_bytes())
}

fn encoded_batch_matches_tokenizer(with_pairs: bool) {
    let dir = TempDir::new().unwrap();
    let spec = DataSpec {
        columns: Columns {
            text_pair: with_pairs.then(|| Column::name("pair")),
            ..Columns::default()
        },
        ..DataSpec::default()
    };
    let data = load(&sentences(&dir), &DevSource::None, &spec).unwrap();
    let tk = tokenizer(12);
    let set = EncodedSet::encode(&data.train, &tk).unwrap();
    assert!(
        set.lengths().iter().all(|&l| l <= 12),
        "truncated to max_len"
    );
    let ours = set.batch(&[2, 0, 1], &Device::Cpu).unwrap();
    let order = [2usize, 0, 1];
    let text: Vec<&str> = order.iter().map(|&i| data.train[i].text.as_str()).collect();
    let pairs: Vec<&str> = order
        .iter()
        .map(|&i| data.train[i].pair.as_deref().unwrap_or(""))
        .collect();
    let theirs = tk
        .encode(&text, with_pairs.then_some(pairs.as_slice()), &Device::Cpu)
        .unwrap();
    assert_eq!(ours.batch.ids, theirs.ids);
    assert_eq!(ours.batch.mask, theirs.mask);
    assert_eq!(ours.batch.type_ids, theirs.type_ids);
    assert_eq!(ours.targets.to_vec1::<u32>().unwrap(), [0, 0, 1]);
}

#[test]
fn encoded_batches_equal_the_tokenizers_padding() {
    encoded_batch_matches_tokenizer(false);
    encoded_batch_matches_tokenizer(true);
}

#[test]
fn regression_targets_are_f32() {
    let dir = TempDir::new().unwrap();
    let path: &Path = &write(&dir, "r.csv", b"text,label\na b,0.25\nc,1.5\n");
    let spec = DataSpec {
        task: TaskKind::Regression,
        ..DataSpec::default()
    };
    let data = load(path, &DevSource::None, &spec).unwrap();
    let set = EncodedSet::encode(&data.train, &tokenizer(8)).unwrap();
    let b = set.batch(&[1, 0], &Device::Cpu).unwrap();
    assert_eq!(b.targets.to_vec1::<f32>().unwrap(), [1.5, 0.25]);
}
