//! The contribution format: every encoding round-trips within its precision, and every kind of bad
//! input is refused with its own error.

mod common;

use std::collections::BTreeMap;

use coldfuse_shared::{
    diff::{
        validate, BaseInfo, DiffError, DiffManifest, DiffReader, Encoding, Scratch, FORMAT_VERSION,
    },
    hash::sha256_file,
    tensorfile::{Dtype, TensorFileError, TensorSpec},
};
use common::synth::{self, Base, BODY};

fn decode_all(reader: &DiffReader) -> BTreeMap<String, Vec<f32>> {
    let mut scratch = Scratch::default();
    reader
        .tensors()
        .iter()
        .map(|t| {
            let mut v = vec![0f32; t.numel];
            reader.decode(t, 0, &mut v, 1.0, &mut scratch).unwrap();
            (t.name.clone(), v)
        })
        .collect()
}

#[test]
fn diff_round_trips_every_encoding_within_its_precision() {
    let base = synth::base(Dtype::F32, 1);
    let info = base.info();
    let diff = synth::random_diff(7, 1e-3);
    let f32_bytes = synth::contribute(&base, "a", &diff, Encoding::F32, 10)
        .manifest
        .diff_bytes as f64;
    for encoding in [
        Encoding::F32,
        Encoding::Bf16,
        Encoding::F16,
        Encoding::Int8,
        Encoding::TopK { density: 0.25 },
    ] {
        let c = synth::contribute(&base, "a", &diff, encoding, 10);
        let (reader, stats) = validate(&c.diff_path(), c.manifest.clone(), &info).unwrap();
        let decoded = decode_all(&reader);
        let mut worst = 0f32;
        for (name, original) in &diff {
            let got = &decoded[name];
            let max = original.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (&o, &g) in original.iter().zip(got) {
                let err = (o - g).abs();
                match encoding {
                    Encoding::F32 => assert_eq!(o, g),
                    Encoding::Bf16 => assert!(err <= o.abs() / 128.0, "{name}: {o} vs {g}"),
                    Encoding::F16 => assert!(err <= o.abs() / 1024.0 + 1e-7, "{name}: {o} vs {g}"),
                    Encoding::Int8 => {
                        assert!(err <= max / 127.0 / 2.0 + 1e-9, "{name}: {o} vs {g}")
                    }
                    Encoding::TopK { .. } => assert!(g == 0.0 || (o - g).abs() <= o.abs() / 128.0),
                }
                worst = worst.max(err / max);
            }
            if let Encoding::TopK { density } = encoding {
                let kept = got.iter().filter(|v| **v != 0.0).count();
                assert_eq!(kept, Encoding::kept(density, original.len()), "{name}");
            }
        }
        assert!(stats.l2_norm > 0.0 && stats.max_abs > 0.0);
        println!(
            "{encoding:>9}: {:>6} bytes ({:.2}× f32), worst error / max |diff| {worst:.2e}",
            c.manifest.diff_bytes,
            c.manifest.diff_bytes as f64 / f32_bytes
        );
    }
}

#[test]
fn diff_manifest_round_trips_as_json_and_names_the_file_hash() {
    let base = synth::base(Dtype::F32, 1);
    let c = synth::contribute(
        &base,
        "site-a",
        &synth::random_diff(1, 1e-3),
        Encoding::Bf16,
        42,
    );
    let parsed = DiffManifest::from_json(&c.manifest.to_json()).unwrap();
    assert_eq!(parsed, c.manifest);
    assert_eq!(parsed.format_version, FORMAT_VERSION);
    assert_eq!(parsed.diff_sha256, sha256_file(&c.diff_path()).unwrap());
    assert_eq!(parsed.tensors.len(), BODY.len());
    assert!(parsed
        .tensors
        .iter()
        .all(|t| !t.name.starts_with("classifier")));
}

/// A valid contribution plus the base, to be broken in one way per test.
fn valid() -> (Base, synth::Contribution) {
    let base = synth::base(Dtype::F32, 3);
    let c = synth::contribute(
        &base,
        "site",
        &synth::random_diff(5, 1e-3),
        Encoding::F32,
        8,
    );
    (base, c)
}

fn refused(base: &Base, c: &synth::Contribution, manifest: DiffManifest) -> DiffError {
    let err = validate(&c.diff_path(), manifest, &base.info()).unwrap_err();
    println!("{}: {err}", err.reason());
    err
}

#[test]
fn diff_for_another_base_is_refused() {
    let (base, c) = valid();
    let mut m = c.manifest.clone();
    m.base.sha256 = "0".repeat(64);
    assert!(matches!(refused(&base, &c, m), DiffError::WrongBase { .. }));
    let other = synth::base(Dtype::F32, 99);
    let err = validate(&c.diff_path(), c.manifest, &other.info()).unwrap_err();
    assert!(matches!(err, DiffError::WrongBase { .. }), "{err}");
}

#[test]
fn diff_with_bad_manifest_fields_is_refused() {
    let (base, c) = valid();
    let mut m = c.manifest.clone();
    m.format_version = 99;
    assert!(matches!(
        refused(&base, &c, m),
        DiffError::UnsupportedVersion { found: 99, .. }
    ));
    let mut m = c.manifest.clone();
    m.architecture = "roberta".into();
    assert!(matches!(
        refused(&base, &c, m),
        DiffError::WrongArchitecture { .. }
    ));
    let mut m = c.manifest.clone();
    m.contributor = " ".into();
    assert!(matches!(refused(&base, &c, m), DiffError::Manifest(_)));
    let mut m = c.manifest.clone();
    m.metrics.insert("loss".into(), f64::NAN);
    assert!(matches!(refused(&base, &c, m), DiffError::Manifest(_)));
    let mut m = c.manifest.clone();
    m.tensors.clear();
    assert!(matches!(refused(&base, &c, m), DiffError::Empty));
    assert!(DiffManifest::from_json(b"{\"format_version\": 1}").is_err());
}

#[test]
fn diff_file_tampered_or_truncated_is_refused() {
    let (base, c) = valid();
    let mut bytes = std::fs::read(c.diff_path()).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(c.diff_path(), &bytes).unwrap();
    let err = refused(&base, &c, c.manifest.clone());
    assert!(
        matches!(err, DiffError::Integrity { what: "sha256", .. }),
        "{err}"
    );
    bytes.truncate(bytes.len() - 4);
    std::fs::write(c.diff_path(), &bytes).unwrap();
    let err = refused(&base, &c, c.manifest.clone());
    assert!(
        matches!(err, DiffError::Integrity { what: "size", .. }),
        "{err}"
    );
    let mut m = c.manifest.clone();
    m.diff_bytes = bytes.len() as u64;
    let err = refused(&base, &c, m);
    assert!(
        matches!(
            err,
            DiffError::File(TensorFileError::Layout { .. } | TensorFileError::Entry { .. })
        ),
        "{err}"
    );
}

#[test]
fn diff_with_garbage_header_is_refused() {
    let (base, c) = valid();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![1, 2, 3], "truncated"),
        (
            [u64::MAX.to_le_bytes().to_vec(), b"{}".to_vec()].concat(),
            "limit",
        ),
        (
            [10u64.to_le_bytes().to_vec(), b"{}".to_vec()].concat(),
            "truncated",
        ),
        (
            [4u64.to_le_bytes().to_vec(), b"[1] ".to_vec()].concat(),
            "expected a JSON object",
        ),
        (
            [4u64.to_le_bytes().to_vec(), b"{{{{".to_vec()].concat(),
            "invalid header",
        ),
        (
            {
                let entry = r#"{"dtype":"F32","shape":[0],"data_offsets":[0,0]}"#;
                let json = format!(r#"{{"x":{entry},"x":{entry}}}"#);
                [
                    (json.len() as u64).to_le_bytes().to_vec(),
                    json.into_bytes(),
                ]
                .concat()
            },
            "listed twice",
        ),
    ];
    for (bytes, expect) in cases {
        std::fs::write(c.diff_path(), &bytes).unwrap();
        let mut m = c.manifest.clone();
        m.diff_bytes = bytes.len() as u64;
        let err = refused(&base, &c, m);
        assert!(matches!(err, DiffError::File(_)), "{err}");
        assert!(err.to_string().contains(expect), "`{err}` lacks `{expect}`");
    }
}

/// Rewrites the diff file from `specs`/`data` and returns a manifest that matches it byte for byte.
fn rewrite(c: &synth::Contribution, specs: &[TensorSpec], data: &[Vec<u8>]) -> DiffManifest {
    synth::write_tensors(&c.diff_path(), specs, data);
    let mut m = c.manifest.clone();
    m.diff_sha256 = sha256_file(&c.diff_path()).unwrap();
    m.diff_bytes = std::fs::metadata(c.diff_path()).unwrap().len();
    m
}

fn f32_spec(name: &str, shape: &[usize]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dtype: Dtype::F32,
        shape: shape.to_vec(),
    }
}

fn body_files(values: impl Fn(&str, usize) -> Vec<f32>) -> (Vec<TensorSpec>, Vec<Vec<u8>>) {
    BODY.iter()
        .map(|&(name, shape)| {
            let n = shape.iter().product();
            (
                f32_spec(name, shape),
                synth::to_bytes(Dtype::F32, &values(name, n)),
            )
        })
        .unzip()
}

#[test]
fn diff_with_nan_or_inf_is_refused() {
    let (base, c) = valid();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let (specs, data) = body_files(|name, n| {
            let mut v = vec![0.001; n];
            if name.ends_with("query.bias") {
                v[3] = bad;
            }
            v
        });
        let m = rewrite(&c, &specs, &data);
        let err = refused(&base, &c, m);
        assert!(
            matches!(&err, DiffError::NonFinite { name, index: 3, .. } if name.ends_with("query.bias")),
            "{err}"
        );
    }
}

#[test]
fn diff_tensors_must_match_the_base_exactly() {
    let (base, c) = valid();
    // Shape differs from the base.
    let mut m = c.manifest.clone();
    m.tensors[0].shape = vec![51, 8];
    assert!(matches!(
        refused(&base, &c, m),
        DiffError::ShapeMismatch { .. }
    ));
    // A tensor the base does not have.
    let mut m = c.manifest.clone();
    m.tensors[0].name = "bert.encoder.layer.7.output.dense.weight".into();
    assert!(matches!(refused(&base, &c, m), DiffError::UnknownTensor(_)));
    // A head tensor.
    let mut m = c.manifest.clone();
    m.tensors[0].name = "classifier.weight".into();
    m.tensors[0].shape = vec![2, 8];
    assert!(matches!(refused(&base, &c, m), DiffError::HeadTensor(_)));
    // A non-float tensor.
    let mut m = c.manifest.clone();
    m.tensors[0].name = synth::POSITION_IDS.into();
    m.tensors[0].shape = vec![1, 16];
    assert!(matches!(refused(&base, &c, m), DiffError::NotFloat { .. }));
    // The manifest lists a tensor the file lacks.
    let (mut specs, mut data) = body_files(|_, n| vec![0.001; n]);
    specs.pop();
    data.pop();
    let m = rewrite(&c, &specs, &data);
    let err = refused(&base, &c, m);
    assert!(err.to_string().contains("not in the file"), "{err}");
    // The file holds a tensor the manifest does not list.
    let (mut specs, mut data) = body_files(|_, n| vec![0.001; n]);
    specs.push(f32_spec("bert.extra", &[2]));
    data.push(vec![0; 8]);
    let m = rewrite(&c, &specs, &data);
    let err = refused(&base, &c, m);
    assert!(err.to_string().contains("not in the manifest"), "{err}");
    // Stored with another dtype than the encoding says.
    let (mut specs, data) = body_files(|_, n| vec![0.001; n]);
    specs[0].dtype = Dtype::I32;
    let m = rewrite(&c, &specs, &data);
    assert!(matches!(refused(&base, &c, m), DiffError::Layout { .. }));
}

#[test]
fn diff_with_bad_sparse_indices_is_refused() {
    let base = synth::base(Dtype::F32, 3);
    let c = synth::contribute(
        &base,
        "s",
        &synth::random_diff(5, 1e-3),
        Encoding::TopK { density: 0.5 },
        1,
    );
    let info = base.info();
    // Re-write the first tensor's indices out of order.
    let reader = DiffReader::open(&c.diff_path(), c.manifest.clone(), &info).unwrap();
    let file = coldfuse_shared::tensorfile::TensorFile::open(c.diff_path()).unwrap();
    drop(reader);
    let mut specs = Vec::new();
    let mut data = Vec::new();
    for t in &file.header.tensors {
        let mut raw = vec![0u8; t.nbytes as usize];
        file.read_raw(t, 0, &mut raw).unwrap();
        if t.name == format!("{}::indices", BODY[0].0) {
            raw.swap(0, 4);
            raw.swap(1, 5);
            raw.swap(2, 6);
            raw.swap(3, 7);
        }
        specs.push(TensorSpec {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        });
        data.push(raw);
    }
    let m = rewrite(&c, &specs, &data);
    let err = validate(&c.diff_path(), m, &info).unwrap_err();
    assert!(
        matches!(err, DiffError::BadIndex { position: 1, .. }),
        "{err}"
    );
}

#[test]
fn diff_builder_refuses_nan_and_wrong_lengths() {
    let mut b = coldfuse_shared::diff::DiffBuilder::new(Encoding::Bf16).unwrap();
    let err = b.add("x", Dtype::F32, &[2], &[1.0, f32::NAN]).unwrap_err();
    assert!(matches!(err, DiffError::NonFinite { index: 1, .. }));
    let err = b.add("y", Dtype::F32, &[3], &[1.0]).unwrap_err();
    assert!(matches!(err, DiffError::Layout { .. }));
    assert!("topk:0".parse::<Encoding>().is_err());
    assert!("topk:1.5".parse::<Encoding>().is_err());
    assert_eq!(
        "topk:0.1".parse::<Encoding>().unwrap(),
        Encoding::TopK { density: 0.1 }
    );
    assert!("int4"
        .parse::<Encoding>()
        .unwrap_err()
        .contains("unknown encoding"));
    let _ = BaseInfo::open(std::path::Path::new("/nonexistent")).unwrap_err();
}

/// `add_body_private` clips the whole diff to the DP norm (no noise: exactly), records the settings in
/// the manifest, and the result validates; with noise the values move by about σ·C.
#[test]
fn diff_private_body_is_clipped_to_the_norm_and_recorded() {
    use coldfuse_shared::{
        diff::{BaseRef, ContributionInfo, DiffBuilder, DpConfig},
        ModelDir,
    };
    let base_dir = common::fixture("bert_tiny/model");
    let base = ModelDir::open(&base_dir).unwrap();
    let model = common::fresh_classifier(&base, 2, 0);
    let body = model.encoder.vars();
    for var in body.values() {
        var.set(&(var.as_tensor() + 0.01).unwrap()).unwrap();
    }
    let base_info = BaseInfo::open(&base_dir).unwrap();
    let base_ref = BaseRef {
        id: "t".into(),
        sha256: base_info.sha256.clone(),
    };
    let write = |dp: DpConfig, seed| {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiffBuilder::new(Encoding::F32).unwrap();
        let report = b.add_body_private(&base, &body, &dp, Some(seed)).unwrap();
        let info = ContributionInfo {
            contributor: "site".into(),
            num_examples: 1,
            metrics: BTreeMap::new(),
        };
        let m = b
            .finish(dir.path(), base_ref.clone(), "bert", info)
            .unwrap();
        assert_eq!(m.dp, Some(dp));
        let path = dir.path().join(coldfuse_shared::diff::DIFF_FILE);
        validate(&path, m.clone(), &base_info).unwrap();
        let reader = DiffReader::open(&path, m, &base_info).unwrap();
        (report, decode_all(&reader))
    };
    let clip = DpConfig {
        clip: 0.05,
        noise_multiplier: 0.0,
    };
    let (report, values) = write(clip, 1);
    assert!(report.norm_before > 0.05 * 10.0, "{report:?}");
    let norm = values
        .values()
        .flatten()
        .map(|&v| f64::from(v).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((norm - 0.05).abs() < 1e-6, "clipped norm {norm}");
    let noisy = DpConfig {
        clip: 0.05,
        noise_multiplier: 1.0,
    };
    let (_, noised) = write(noisy, 2);
    let (n, sq) = noised
        .iter()
        .flat_map(|(k, v)| v.iter().zip(&values[k]))
        .fold((0usize, 0f64), |(n, s), (a, b)| {
            (n + 1, s + f64::from(a - b).powi(2))
        });
    let std = (sq / n as f64).sqrt();
    assert!((std - 0.05).abs() < 0.005, "noise std {std} for σ·C = 0.05");
}

/// A top-k diff whose first tensor keeps nothing: its empty index part sits at the same offset as the
/// next tensor's indices. Decoding must not take one for the other (a cache keyed by offset alone read
/// the second tensor as zeros, so its NaN passed validation and its norm was never counted).
#[test]
fn an_empty_sparse_part_cannot_stand_in_for_another_tensors_indices() {
    let base = synth::base(Dtype::F32, 21);
    let info = base.info();
    let (a_name, a_shape) = BODY[1];
    let (b_name, b_shape) = BODY[0];
    let only_b: BTreeMap<String, Vec<f32>> = synth::random_diff(3, 1e-3)
        .into_iter()
        .filter(|(k, _)| k == b_name)
        .collect();
    let c = synth::contribute(&base, "a", &only_b, Encoding::TopK { density: 0.25 }, 10);
    let mut m = c.manifest.clone();
    let kept = m.tensors[0].kept.unwrap();
    let mut empty = m.tensors[0].clone();
    empty.name = a_name.into();
    empty.shape = a_shape.to_vec();
    empty.kept = Some(0);
    m.tensors.insert(0, empty);
    let specs = [
        (format!("{a_name}::indices"), Dtype::U32, vec![0]),
        (format!("{a_name}::values"), Dtype::Bf16, vec![0]),
        (format!("{b_name}::indices"), Dtype::U32, vec![kept]),
        (format!("{b_name}::values"), Dtype::Bf16, vec![kept]),
    ]
    .map(|(name, dtype, shape)| TensorSpec { name, dtype, shape });
    let numel: usize = b_shape.iter().product();
    let indices: Vec<u8> = (0..kept as u32)
        .map(|i| i * (numel / kept) as u32)
        .flat_map(u32::to_le_bytes)
        .collect();
    let mut values = vec![1e-3f32; kept];
    values[kept / 2] = f32::NAN;
    let data = [
        vec![],
        vec![],
        indices,
        synth::to_bytes(Dtype::Bf16, &values),
    ];
    let path = c.diff_path();
    synth::write_tensors(&path, &specs, &data);
    m.diff_bytes = std::fs::metadata(&path).unwrap().len();
    m.diff_sha256 = sha256_file(&path).unwrap();
    let err = validate(&path, m, &info).unwrap_err();
    assert!(matches!(err, DiffError::NonFinite { .. }), "{err}");
}
