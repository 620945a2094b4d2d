//! Property tests of fusion: identical models fuse to themselves, fusing diffs equals averaging the
//! full models, arrival order does not matter, and robust strategies ignore one huge outlier.

mod common;

use std::collections::BTreeMap;

use coldfuse_shared::{
    diff::{DiffReader, Encoding},
    fusion::{fuse_weights, FuseOptions, FusionConfig},
    tensorfile::Dtype,
};
use common::synth::{self, Base, Contribution, BODY};
use proptest::prelude::*;

type Diff = BTreeMap<String, Vec<f32>>;

fn fused(base: &Base, cs: &[&Contribution], strategy: &str) -> BTreeMap<String, Vec<f32>> {
    let info = base.info();
    let readers: Vec<DiffReader> = cs
        .iter()
        .map(|c| DiffReader::open(&c.diff_path(), c.manifest.clone(), &info).unwrap())
        .collect();
    let config = FusionConfig {
        strategy: strategy.parse().unwrap(),
        clip_norm: None,
        clip_to_median: None,
        cap_examples_to_median: None,
    };
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("fused.safetensors");
    fuse_weights(&info, &readers, &config, &path, &FuseOptions::default()).unwrap();
    synth::read_all(&path)
        .into_iter()
        .map(|(k, (f, _))| (k, f))
        .collect()
}

fn contribute_all(base: &Base, diffs: &[Diff]) -> Vec<Contribution> {
    diffs
        .iter()
        .enumerate()
        .map(|(i, d)| synth::contribute(base, &format!("c{i}"), d, Encoding::F32, 1))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn fusion_of_identical_models_returns_that_model(seed in 0u64..1000, n in 1usize..6) {
        let base = synth::base(Dtype::F32, seed);
        let diff = synth::random_diff(seed + 1, 0.05);
        let cs = contribute_all(&base, &vec![diff.clone(); n]);
        let refs: Vec<&Contribution> = cs.iter().collect();
        for strategy in ["mean", "weighted", "median", "ties:density=1"] {
            let got = fused(&base, &refs, strategy);
            for &(name, _) in BODY {
                let want: Vec<f32> = base.values[name].iter().zip(&diff[name]).map(|(b, d)| b + d).collect();
                prop_assert_eq!(&got[name], &want, "{} with {} copies", strategy, n);
            }
        }
        if n >= 3 {
            let got = fused(&base, &refs, "trimmed-mean:trim=0.34");
            for &(name, _) in BODY {
                let want: Vec<f32> = base.values[name].iter().zip(&diff[name]).map(|(b, d)| b + d).collect();
                prop_assert_eq!(&got[name], &want);
            }
        }
    }

    #[test]
    fn fusion_of_diffs_equals_averaging_the_full_models(seed in 0u64..1000, n in 1usize..6) {
        let base = synth::base(Dtype::F32, seed);
        // Full fine-tuned models, and their diffs against the base.
        let models: Vec<Diff> = (0..n)
            .map(|i| {
                let d = synth::random_diff(seed * 10 + i as u64, 0.1);
                d.into_iter()
                    .map(|(k, v)| {
                        let full = base.values[&k].iter().zip(&v).map(|(b, x)| b + x).collect();
                        (k, full)
                    })
                    .collect()
            })
            .collect();
        let diffs: Vec<Diff> = models
            .iter()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.iter().zip(&base.values[k]).map(|(x, b)| x - b).collect()))
                    .collect()
            })
            .collect();
        let cs = contribute_all(&base, &diffs);
        let got = fused(&base, &cs.iter().collect::<Vec<_>>(), "mean");
        for &(name, _) in BODY {
            for (j, &g) in got[name].iter().enumerate() {
                let avg = models.iter().map(|m| m[name][j] as f64).sum::<f64>() / n as f64;
                prop_assert!((g as f64 - avg).abs() <= 1e-6, "{}[{}]: {} vs {}", name, j, g, avg);
            }
        }
    }

    #[test]
    fn fusion_is_invariant_to_contribution_order(seed in 0u64..1000, n in 2usize..6, rotate in 0usize..5, swap in any::<bool>()) {
        let base = synth::base(Dtype::Bf16, seed);
        let diffs: Vec<Diff> = (0..n).map(|i| synth::random_diff(seed * 7 + i as u64, 0.02)).collect();
        let cs = contribute_all(&base, &diffs);
        let mut order: Vec<&Contribution> = cs.iter().collect();
        let first = fused(&base, &order, "mean");
        order.rotate_left(rotate % n);
        if swap {
            order.swap(0, n - 1);
        }
        prop_assert_eq!(first, fused(&base, &order, "mean"));
    }

    #[test]
    fn fusion_trimmed_mean_and_median_are_unmoved_by_one_huge_outlier(seed in 0u64..1000, sign in prop_oneof![Just(1.0f32), Just(-1.0f32)]) {
        let base = synth::base(Dtype::F32, seed);
        let honest: Vec<Diff> = (0..4).map(|i| synth::random_diff(seed * 3 + i, 0.01)).collect();
        let outlier: Diff = honest[0]
            .iter()
            .map(|(k, v)| (k.clone(), vec![sign * 1e6; v.len()]))
            .collect();
        let mut all = honest.clone();
        all.push(outlier);
        let cs = contribute_all(&base, &all);
        let refs: Vec<&Contribution> = cs.iter().collect();
        for strategy in ["trimmed-mean:trim=0.2", "median"] {
            let got = fused(&base, &refs, strategy);
            for &(name, _) in BODY {
                for (j, &g) in got[name].iter().enumerate() {
                    let column: Vec<f32> = honest.iter().map(|d| d[name][j]).collect();
                    let lo = column.iter().cloned().fold(f32::INFINITY, f32::min);
                    let hi = column.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let b = base.values[name][j];
                    let eps = 1e-6;
                    prop_assert!(g >= b + lo - eps && g <= b + hi + eps, "{} {}[{}]: {} outside [{}, {}]", strategy, name, j, g - b, lo, hi);
                }
            }
        }
    }
}
