//! Fusion strategies against straightforward reference computations, engine invariants (threads,
//! chunking, pass-through, atomic output), refusals, and a fusion of a real model's diffs.

mod common;

use std::collections::BTreeMap;

use coldfuse_shared::{
    diff::{BaseInfo, DiffBuilder, DiffError, DiffReader, Encoding},
    fusion::{
        fuse_dir, fuse_weights, FuseOptions, FusionConfig, FusionError, FusionReport,
        StrategyConfig,
    },
    tensorfile::Dtype,
};
use common::synth::{self, Base, Contribution, BODY, HEAD, POSITION_IDS};

fn readers(base: &BaseInfo, cs: &[Contribution]) -> Vec<DiffReader> {
    cs.iter()
        .map(|c| DiffReader::open(&c.diff_path(), c.manifest.clone(), base).unwrap())
        .collect()
}

/// Fuses and returns every output tensor as f32 (floats) plus raw bytes.
fn fuse(
    base: &Base,
    cs: &[Contribution],
    strategy: &str,
    clip: Option<f64>,
    options: FuseOptions,
) -> BTreeMap<String, (Vec<f32>, Vec<u8>)> {
    let info = base.info();
    let config = FusionConfig {
        strategy: strategy.parse().unwrap(),
        clip_norm: clip,
        clip_to_median: None,
        cap_examples_to_median: None,
    };
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("fused.safetensors");
    let report = fuse_weights(&info, &readers(&info, cs), &config, &path, &options).unwrap();
    assert_eq!(report.fused_tensors, BODY.len());
    assert_eq!(report.passthrough_tensors, HEAD.len() + 1);
    synth::read_all(&path)
}

/// Every tensor of a fused file, as `synth::read_all` gives them.
type Tensors = BTreeMap<String, (Vec<f32>, Vec<u8>)>;

/// Fuses `cs` into `base` with `config`; the report and the fused tensors.
fn fuse_config(base: &Base, cs: &[Contribution], config: &FusionConfig) -> (FusionReport, Tensors) {
    let info = base.info();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("fused.safetensors");
    let report = fuse_weights(
        &info,
        &readers(&info, cs),
        config,
        &path,
        &FuseOptions::default(),
    )
    .unwrap();
    (report, synth::read_all(&path))
}

fn contributions(
    base: &Base,
    n: usize,
    encoding: Encoding,
) -> (Vec<Contribution>, Vec<BTreeMap<String, Vec<f32>>>) {
    let diffs: Vec<_> = (0..n)
        .map(|i| synth::random_diff(100 + i as u64, 1e-2))
        .collect();
    let cs = diffs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            synth::contribute(base, &format!("site-{i}"), d, encoding, 10 * (i as u64 + 1))
        })
        .collect();
    (cs, diffs)
}

/// Applies `f` to each coordinate's column of diffs and adds the result to the base.
fn reference(
    base: &Base,
    diffs: &[BTreeMap<String, Vec<f32>>],
    f: impl Fn(&[f32]) -> f64,
) -> BTreeMap<String, Vec<f32>> {
    BODY.iter()
        .map(|&(name, _)| {
            let b = &base.values[name];
            let fused = (0..b.len())
                .map(|j| {
                    let column: Vec<f32> = diffs.iter().map(|d| d[name][j]).collect();
                    b[j] + f(&column) as f32
                })
                .collect();
            (name.to_string(), fused)
        })
        .collect()
}

fn assert_close(
    got: &BTreeMap<String, (Vec<f32>, Vec<u8>)>,
    want: &BTreeMap<String, Vec<f32>>,
    tol: f32,
    what: &str,
) {
    let mut worst = 0f32;
    for (name, w) in want {
        for (&g, &w) in got[name].0.iter().zip(w) {
            worst = worst.max((g - w).abs());
        }
    }
    println!("{what}: max abs error vs reference {worst:.2e}");
    assert!(worst <= tol, "{what}: {worst} > {tol}");
}

/// TIES's reference for one coordinate of (already trimmed) diffs: elect the sign of the total mass,
/// then average the non-zero values that agree with it.
fn ties_elect_and_mean(c: &[f32]) -> f64 {
    let mass: f64 = c.iter().map(|&v| v as f64).sum();
    let agree: Vec<f64> = c
        .iter()
        .map(|&v| v as f64)
        .filter(|v| *v != 0.0 && (*v > 0.0) == (mass > 0.0))
        .collect();
    if mass == 0.0 || agree.is_empty() {
        0.0
    } else {
        agree.iter().sum::<f64>() / agree.len() as f64
    }
}

#[test]
fn fusion_strategies_match_reference_computations() {
    let base = synth::base(Dtype::F32, 11);
    let (cs, diffs) = contributions(&base, 5, Encoding::F32);
    let opts = FuseOptions::default;
    let mean = |c: &[f32]| c.iter().map(|&v| v as f64).sum::<f64>() / c.len() as f64;
    let sorted = |c: &[f32]| {
        let mut s = c.to_vec();
        s.sort_by(f32::total_cmp);
        s
    };
    assert_close(
        &fuse(&base, &cs, "mean", None, opts()),
        &reference(&base, &diffs, mean),
        1e-6,
        "mean",
    );
    // Examples 10, 20, 30, 40, 50 by contribution; contributions are fused in hash order, so weigh by
    // each manifest's own count.
    let counts: Vec<f64> = cs.iter().map(|c| c.manifest.num_examples as f64).collect();
    let total: f64 = counts.iter().sum();
    let weighted = reference(&base, &diffs, |c| {
        c.iter()
            .zip(&counts)
            .map(|(&v, &n)| v as f64 * n / total)
            .sum()
    });
    assert_close(
        &fuse(&base, &cs, "weighted", None, opts()),
        &weighted,
        1e-6,
        "weighted",
    );
    let median = reference(&base, &diffs, |c| sorted(c)[2] as f64);
    assert_close(
        &fuse(&base, &cs, "median", None, opts()),
        &median,
        1e-6,
        "median",
    );
    let trimmed = reference(&base, &diffs, |c| mean(&sorted(c)[1..4]));
    assert_close(
        &fuse(&base, &cs, "trimmed-mean:trim=0.2", None, opts()),
        &trimmed,
        1e-6,
        "trimmed-mean",
    );
    let ta = reference(&base, &diffs, |c| {
        0.3 * c.iter().map(|&v| v as f64).sum::<f64>()
    });
    assert_close(
        &fuse(&base, &cs, "task-arithmetic:lambda=0.3", None, opts()),
        &ta,
        1e-6,
        "task-arithmetic",
    );
    let dare0 = fuse(&base, &cs, "dare:drop=0", None, opts());
    assert_close(
        &dare0,
        &reference(&base, &diffs, mean),
        1e-6,
        "dare p=0 is the mean",
    );
    // TIES with density 1: nothing trimmed; sign election + disjoint mean.
    let ties = reference(&base, &diffs, ties_elect_and_mean);
    assert_close(
        &fuse(&base, &cs, "ties:density=1", None, opts()),
        &ties,
        1e-6,
        "ties density 1",
    );
}

#[test]
fn fusion_ties_trims_each_diff_to_its_largest_values() {
    let base = synth::base(Dtype::F32, 12);
    let (cs, diffs) = contributions(&base, 3, Encoding::F32);
    let got = fuse(
        &base,
        &cs,
        "ties:density=0.25",
        None,
        FuseOptions::default(),
    );
    // Reference: per tensor and contribution, keep values with |v| ≥ the k-th largest magnitude.
    let mut trimmed = diffs;
    for d in &mut trimmed {
        for v in d.values_mut() {
            let k = (0.25 * v.len() as f64).ceil() as usize;
            let mut mags: Vec<f32> = v.iter().map(|x| x.abs()).collect();
            mags.sort_by(|a, b| b.total_cmp(a));
            let t = mags[k - 1];
            v.iter_mut().for_each(|x| {
                if x.abs() < t {
                    *x = 0.0
                }
            });
        }
    }
    let want = reference(&base, &trimmed, ties_elect_and_mean);
    assert_close(&got, &want, 1e-6, "ties density 0.25");
}

#[test]
fn fusion_dare_drops_the_requested_fraction_reproducibly() {
    let base = synth::base(Dtype::F32, 13);
    let (cs, _) = contributions(&base, 1, Encoding::F32);
    let a = fuse(
        &base,
        &cs,
        "dare:drop=0.7,seed=3",
        None,
        FuseOptions::default(),
    );
    let b = fuse(
        &base,
        &cs,
        "dare:drop=0.7,seed=3",
        None,
        FuseOptions {
            threads: Some(1),
            chunk_elements: 7,
            sync: false,
            ..FuseOptions::default()
        },
    );
    let c = fuse(
        &base,
        &cs,
        "dare:drop=0.7,seed=4",
        None,
        FuseOptions::default(),
    );
    assert_eq!(a, b, "same seed, other chunking/threads: same result");
    assert_ne!(a, c, "another seed: another mask");
    let (mut kept, mut total) = (0, 0);
    for &(name, _) in BODY {
        for (g, b) in a[name].0.iter().zip(&base.values[name]) {
            total += 1;
            kept += (g != b) as usize;
        }
    }
    let fraction = kept as f64 / total as f64;
    println!("dare drop=0.7 kept {fraction:.3} of {total}");
    assert!((fraction - 0.3).abs() < 0.05, "{fraction}");
}

#[test]
fn fusion_is_bit_identical_across_threads_chunks_and_arrival_order() {
    let base = synth::base(Dtype::Bf16, 14);
    let (mut cs, _) = contributions(&base, 4, Encoding::Bf16);
    for strategy in ["mean", "median", "ties:density=0.3"] {
        let a = fuse(&base, &cs, strategy, None, FuseOptions::default());
        let b = fuse(
            &base,
            &cs,
            strategy,
            None,
            FuseOptions {
                threads: Some(3),
                chunk_elements: 5,
                sync: false,
                ..FuseOptions::default()
            },
        );
        cs.reverse();
        let c = fuse(
            &base,
            &cs,
            strategy,
            None,
            FuseOptions {
                threads: Some(1),
                chunk_elements: 64,
                sync: false,
                ..FuseOptions::default()
            },
        );
        assert_eq!(a, b, "{strategy}: threads/chunks changed the result");
        assert_eq!(a, c, "{strategy}: arrival order changed the result");
    }
}

#[test]
fn fusion_copies_heads_and_non_float_tensors_unchanged() {
    let base = synth::base(Dtype::F16, 15);
    let (cs, _) = contributions(&base, 2, Encoding::F16);
    let got = fuse(&base, &cs, "mean", None, FuseOptions::default());
    let original = synth::read_all(&base.path().join("model.safetensors"));
    for &(name, _) in HEAD {
        assert_eq!(got[name].1, original[name].1, "{name}");
    }
    assert_eq!(got[POSITION_IDS].1, original[POSITION_IDS].1);
    for &(name, _) in BODY {
        assert_ne!(got[name].1, original[name].1, "{name} was not updated");
    }
}

#[test]
fn fusion_clips_large_diffs_to_the_norm_bound() {
    let base = synth::base(Dtype::F32, 16);
    let small = synth::random_diff(1, 1e-3);
    let huge: BTreeMap<String, Vec<f32>> = small
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|x| x * 1e4).collect()))
        .collect();
    let norm = |d: &BTreeMap<String, Vec<f32>>| {
        d.values()
            .flatten()
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let bound = norm(&small) * 2.0;
    let cs = vec![
        synth::contribute(&base, "honest", &small, Encoding::F32, 1),
        synth::contribute(&base, "loud", &huge, Encoding::F32, 1),
    ];
    let got = fuse(&base, &cs, "mean", Some(bound), FuseOptions::default());
    let scale = (bound / norm(&huge)) as f32;
    let want = reference(&base, &[small, huge], |c| {
        (c[0] as f64 + c[1] as f64 * scale as f64) / 2.0
    });
    assert_close(&got, &want, 1e-6, "clipped mean");
}

/// A diff that covers only some body tensors is the sparse form of a full one: the tensors it omits
/// count as zeros for it, so it can neither block a fusion nor change what it left out alone.
#[test]
fn a_partial_diff_counts_as_zeros_where_it_is_silent() {
    let base = synth::base(Dtype::F32, 19);
    let full = synth::random_diff(4, 1e-3);
    let mut partial = synth::random_diff(5, 1e-3);
    let only = BODY[0].0;
    partial.retain(|k, _| k == only);
    let cs = vec![
        synth::contribute(&base, "full", &full, Encoding::F32, 1),
        synth::contribute(&base, "partial", &partial, Encoding::F32, 1),
    ];
    let got = fuse(&base, &cs, "mean", None, FuseOptions::default());
    let mut zero_filled = partial.clone();
    for (name, v) in &full {
        zero_filled
            .entry(name.clone())
            .or_insert_with(|| vec![0.0; v.len()]);
    }
    let want = reference(&base, &[full.clone(), zero_filled.clone()], |c| {
        (c[0] as f64 + c[1] as f64) / 2.0
    });
    assert_close(&got, &want, 1e-6, "mean with a partial diff");
    // Whichever diff comes first in the canonical order, and for the other strategies too.
    for strategy in ["median", "ties:density=0.5", "weighted"] {
        let got = fuse(&base, &cs, strategy, None, FuseOptions::default());
        let both = fuse(
            &base,
            &[
                synth::contribute(&base, "full", &full, Encoding::F32, 1),
                synth::contribute(&base, "partial", &zero_filled, Encoding::F32, 1),
            ],
            strategy,
            None,
            FuseOptions::default(),
        );
        assert_close(
            &got,
            &both.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect(),
            1e-6,
            strategy,
        );
    }
}

/// `clip_to_median: K` scales each diff down to K × the lower median of the round's norms: with three
/// diffs, the middle one's, so the oversized third sets no bound of its own.
#[test]
fn fusion_clips_to_k_times_the_lower_median_norm() {
    let base = synth::base(Dtype::F32, 22);
    let small = synth::random_diff(1, 1e-3);
    let scaled = |k: f32| -> BTreeMap<String, Vec<f32>> {
        small
            .iter()
            .map(|(n, v)| (n.clone(), v.iter().map(|x| x * k).collect()))
            .collect()
    };
    let diffs = [small.clone(), scaled(1.5), scaled(100.0)];
    let cs: Vec<_> = diffs
        .iter()
        .enumerate()
        .map(|(i, d)| synth::contribute(&base, &format!("c{i}"), d, Encoding::F32, 1))
        .collect();
    let config = FusionConfig {
        strategy: "mean".parse().unwrap(),
        clip_norm: None,
        clip_to_median: Some(2.0),
        cap_examples_to_median: None,
    };
    let (report, fused) = fuse_config(&base, &cs, &config);
    let factor = |name: &str| {
        report
            .contributions
            .iter()
            .find(|c| c.contributor == name)
            .unwrap()
            .clip_factor
    };
    assert_eq!((factor("c0"), factor("c1")), (1.0, 1.0));
    // Bound 2 × (1.5 × ‖small‖) for a diff of 100 × ‖small‖.
    assert!((factor("c2") - 0.03).abs() < 1e-4, "{}", factor("c2"));
    let want = reference(&base, &diffs, |c| {
        (c[0] as f64 + c[1] as f64 + c[2] as f64 * 0.03) / 3.0
    });
    assert_close(&fused, &want, 1e-6, "mean clipped to the median");
}

/// `cap_examples_to_median: K`: under `weighted`, a self-reported example count above K × the median
/// count weighs as that much, so a site claiming 10¹² examples cannot take the whole weight.
#[test]
fn weighted_fusion_caps_example_counts_at_k_times_the_median() {
    let base = synth::base(Dtype::F32, 23);
    let diffs: Vec<_> = (0..3).map(|i| synth::random_diff(30 + i, 1e-3)).collect();
    let counts = [10u64, 20, 1_000_000_000_000];
    let cs: Vec<_> = diffs
        .iter()
        .zip(counts)
        .enumerate()
        .map(|(i, (d, n))| synth::contribute(&base, &format!("c{i}"), d, Encoding::F32, n))
        .collect();
    let config = FusionConfig {
        strategy: "weighted".parse().unwrap(),
        clip_norm: None,
        clip_to_median: None,
        cap_examples_to_median: Some(2.0),
    };
    let (report, fused) = fuse_config(&base, &cs, &config);
    // Median 20, cap 40: weights 10/70, 20/70, 40/70.
    let weight = |name: &str| {
        let c = report.contributions.iter().find(|c| c.contributor == name);
        c.unwrap().weight
    };
    for (name, want) in [
        ("c0", 10.0 / 70.0),
        ("c1", 20.0 / 70.0),
        ("c2", 40.0 / 70.0),
    ] {
        assert!(
            (weight(name) - want).abs() < 1e-12,
            "{name}: {}",
            weight(name)
        );
    }
    let want = reference(&base, &diffs, |c| {
        (c[0] as f64 * 10.0 + c[1] as f64 * 20.0 + c[2] as f64 * 40.0) / 70.0
    });
    assert_close(&fused, &want, 1e-6, "capped weighted mean");
}

#[test]
fn fusion_refuses_mismatched_or_insufficient_contributions() {
    let base = synth::base(Dtype::F32, 17);
    let info = base.info();
    let (cs, _) = contributions(&base, 2, Encoding::F32);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("fused.safetensors");
    let run = |rs: &[DiffReader], strategy: &str| {
        let config = FusionConfig {
            strategy: strategy.parse().unwrap(),
            clip_norm: None,
            clip_to_median: None,
            cap_examples_to_median: None,
        };
        fuse_weights(&info, rs, &config, &path, &FuseOptions::default()).unwrap_err()
    };
    assert!(matches!(
        run(&[], "mean"),
        FusionError::TooFew {
            needed: 1,
            got: 0,
            ..
        }
    ));
    let err = run(&readers(&info, &cs), "trimmed-mean:trim=0.4");
    assert!(
        matches!(
            err,
            FusionError::TooFew {
                needed: 3,
                got: 2,
                ..
            }
        ),
        "{err}"
    );
    // A reader opened against this base, fused into another.
    let other = synth::base(Dtype::F32, 18);
    let config = FusionConfig::default();
    let err = fuse_weights(
        &other.info(),
        &readers(&info, &cs),
        &config,
        &path,
        &FuseOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, FusionError::Diff { source, .. } if matches!(**source, DiffError::WrongBase { .. })),
        "{err}"
    );
    assert!(!path.exists(), "a failed fusion leaves no output");
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "no temp files left behind"
    );
    // Bad parameters.
    for bad in [
        "ties:density=0",
        "dare:drop=1",
        "trimmed-mean:trim=0.5",
        "mean:x=1",
        "nope",
        "ties:density=abc",
    ] {
        let err = bad.parse::<StrategyConfig>().unwrap_err();
        println!("{bad}: {err}");
    }
}

#[test]
fn fusion_overflowing_a_half_precision_base_is_refused() {
    let base = synth::base(Dtype::F16, 19);
    let big: BTreeMap<String, Vec<f32>> = BODY
        .iter()
        .map(|&(n, s)| (n.to_string(), vec![60000.0; s.iter().product()]))
        .collect();
    let cs = vec![synth::contribute(&base, "x", &big, Encoding::F32, 1)];
    let info = base.info();
    let out = tempfile::tempdir().unwrap();
    let err = fuse_weights(
        &info,
        &readers(&info, &cs),
        &FusionConfig {
            strategy: "task-arithmetic:lambda=2".parse().unwrap(),
            clip_norm: None,
            clip_to_median: None,
            cap_examples_to_median: None,
        },
        &out.path().join("f.safetensors"),
        &FuseOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, FusionError::NonFinite { .. }), "{err}");
}

#[test]
fn fusion_of_a_real_model_writes_a_loadable_base_equal_to_base_plus_mean_diff() {
    use candle_core::Device;
    use coldfuse_shared::{HeadInit, ModelDir, SequenceClassifier};
    let fixture = common::fixture("bert_tiny").join("model");
    let base_dir = ModelDir::open(&fixture).unwrap();
    let info = BaseInfo::open(&fixture).unwrap();
    let base_ref = coldfuse_shared::diff::BaseRef {
        id: "bert_tiny".into(),
        sha256: info.sha256.clone(),
    };
    let mut cs = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..3u64 {
        // A "fine-tuned" body: every weight moved by a different small amount.
        let model = SequenceClassifier::load(
            &base_dir,
            HeadInit::Fresh {
                num_labels: 2,
                seed: i,
            },
            &Device::Cpu,
        )
        .unwrap();
        let body = model.encoder.vars();
        for (k, var) in &body {
            let delta = ((k.len() as f32 + i as f32) * 1e-3).sin() * 1e-2;
            var.set(&(var.as_tensor() + delta as f64).unwrap()).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let mut builder = DiffBuilder::new(Encoding::F32).unwrap();
        builder.add_body(&base_dir, &body).unwrap();
        let info_c = coldfuse_shared::diff::ContributionInfo {
            contributor: format!("site-{i}"),
            num_examples: 5,
            metrics: Default::default(),
        };
        let manifest = builder
            .finish(dir.path(), base_ref.clone(), "bert", info_c)
            .unwrap();
        assert!(manifest
            .tensors
            .iter()
            .all(|t| !t.name.starts_with("classifier")));
        cs.push(Contribution { dir, manifest });
        bodies.push(body);
    }
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("iteration-1");
    let report = fuse_dir(
        &info,
        &readers(&info, &cs),
        &FusionConfig::default(),
        &target,
        &FuseOptions::default(),
    )
    .unwrap();
    println!("{}", serde_json::to_string(&report).unwrap());
    let fused = ModelDir::open(&target).unwrap();
    let mut worst = 0f32;
    for (canon, base_t) in base_dir.tensors.iter() {
        let got = &fused.tensors[canon];
        let want = match bodies[0].get(canon) {
            Some(_) => {
                let sum = bodies
                    .iter()
                    .map(|b| b[canon].as_tensor().clone())
                    .reduce(|a, b| (a + b).unwrap())
                    .unwrap();
                (sum / 3.0).unwrap()
            }
            None => base_t.clone(),
        };
        let err = (got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        worst = worst.max(err);
    }
    println!("fused real model: max abs error vs mean of fine-tuned models {worst:.2e}");
    assert!(worst < 1e-6, "{worst}");
    // The fused dir is a complete model dir.
    assert!(target.join("config.json").is_file());
    let _ = SequenceClassifier::load(
        &fused,
        HeadInit::Fresh {
            num_labels: 2,
            seed: 0,
        },
        &Device::Cpu,
    )
    .unwrap();
    // Writing into a non-empty directory is refused and leaves it untouched.
    let err = fuse_dir(
        &info,
        &readers(&info, &cs),
        &FusionConfig::default(),
        &target,
        &FuseOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, FusionError::OutputExists(_)), "{err}");
}

#[test]
fn fusion_server_optimisers_follow_fedavgm_and_fedadam() {
    use coldfuse_shared::{fusion::apply_server_optimizer, tensorfile::TensorFile};
    let base = synth::base(Dtype::F32, 21);
    let (cs, _) = contributions(&base, 2, Encoding::F32);
    let info = base.info();
    let out = tempfile::tempdir().unwrap();
    let plain = out.path().join("plain.safetensors");
    let config = FusionConfig::default();
    fuse_weights(
        &info,
        &readers(&info, &cs),
        &config,
        &plain,
        &FuseOptions::default(),
    )
    .unwrap();
    let plain_values = synth::read_all(&plain);
    let names: Vec<String> = BODY.iter().map(|(n, _)| n.to_string()).collect();
    let base_file = TensorFile::open(base.path().join("model.safetensors")).unwrap();
    let run = |opt: &str, prev: Option<&std::path::Path>, tag: &str| {
        let fused = out.path().join(format!("{tag}.safetensors"));
        std::fs::copy(&plain, &fused).unwrap();
        let state = out.path().join(format!("{tag}.state"));
        apply_server_optimizer(
            opt.parse().unwrap(),
            &base_file,
            &fused,
            &names,
            prev,
            &state,
        )
        .unwrap();
        (synth::read_all(&fused), state)
    };
    let (m1, state1) = run("momentum:lr=0.5,beta=0.9", None, "m1");
    let (m2, _) = run("momentum:lr=0.5,beta=0.9", Some(&state1), "m2");
    let (adam, _) = run("adam:lr=0.01,beta1=0.9,beta2=0.99,tau=0.001", None, "adam");
    for &(name, _) in BODY {
        for j in 0..base.values[name].len() {
            let b = base.values[name][j];
            let delta = plain_values[name].0[j] - b;
            let close = |got: f32, want: f32| {
                assert!((got - want).abs() <= 1e-6, "{name}[{j}]: {got} vs {want}")
            };
            close(m1[name].0[j], b + 0.5 * delta);
            close(m2[name].0[j], b + 0.5 * (0.9 * delta + delta));
            let (m, v) = (0.1 * delta, 0.01 * delta * delta);
            close(adam[name].0[j], b + 0.01 * m / (v.sqrt() + 0.001));
        }
    }
    for (name, _) in HEAD {
        assert_eq!(m1[*name].1, plain_values[*name].1, "{name} passes through");
    }
    assert!("momentum:lr=0,beta=0.9"
        .parse::<coldfuse_shared::fusion::ServerOptimizer>()
        .is_err());
    assert!("adam:lr=1"
        .parse::<coldfuse_shared::fusion::ServerOptimizer>()
        .is_err());
}
