//! The running sum of the linear strategies closes a round to exactly the bits the engine writes for
//! the same diffs in the recorded fold order (what `coldfuse verify` replays), whatever that order,
//! the base's dtype, partial diffs, staleness scales or signed zeros; and it refuses what it cannot
//! close.

mod common;

use std::collections::BTreeMap;

use coldfuse_shared::{
    diff::{DiffReader, Encoding},
    fusion::{
        foldable, fuse_weights, FuseOptions, FusionConfig, FusionError, FusionReport, RunningSum,
    },
    tensorfile::Dtype,
};
use common::synth::{self, Base, Contribution, BODY};

type Tensors = BTreeMap<String, (Vec<f32>, Vec<u8>)>;

fn config(strategy: &str) -> FusionConfig {
    FusionConfig {
        strategy: strategy.parse().unwrap(),
        ..FusionConfig::default()
    }
}

fn reader(base: &Base, c: &Contribution, scale: f32) -> DiffReader {
    let mut r = DiffReader::open(&c.diff_path(), c.manifest.clone(), &base.info()).unwrap();
    r.scale = scale;
    r
}

/// Folds `cs[order[k]]` (scaled by `scales[order[k]]`) one by one for k < `folded`, then closes
/// with the rest folded in the closing pass; the report and the written tensors.
fn close(
    base: &Base,
    cs: &[Contribution],
    scales: &[f32],
    order: &[usize],
    folded: usize,
    strategy: &str,
) -> (FusionReport, Tensors) {
    let work = tempfile::tempdir().unwrap();
    let info = base.info();
    let mut sum = RunningSum::create(&work.path().join("sum.f64"), &info).unwrap();
    for &i in &order[..folded] {
        sum.fold(&reader(base, &cs[i], scales[i]), Some(2)).unwrap();
    }
    let want: Vec<String> = order[..folded]
        .iter()
        .map(|&i| cs[i].manifest.contributor.clone())
        .collect();
    assert_eq!(sum.order(), want);
    let last: Vec<DiffReader> = order[folded..]
        .iter()
        .map(|&i| reader(base, &cs[i], scales[i]))
        .collect();
    let out = work.path().join("fused.safetensors");
    let options = FuseOptions::default();
    let report = sum
        .finish(&last, &info, &config(strategy), &out, &options)
        .unwrap();
    (report, synth::read_all(&out))
}

/// The engine over every diff at once, combining them in `order`.
fn engine(
    base: &Base,
    cs: &[Contribution],
    scales: &[f32],
    order: &[usize],
    strategy: &str,
) -> (FusionReport, Tensors) {
    let work = tempfile::tempdir().unwrap();
    let readers: Vec<DiffReader> = cs
        .iter()
        .zip(scales)
        .map(|(c, &s)| reader(base, c, s))
        .collect();
    let options = FuseOptions {
        order: Some(
            order
                .iter()
                .map(|&i| cs[i].manifest.contributor.clone())
                .collect(),
        ),
        ..FuseOptions::default()
    };
    let out = work.path().join("fused.safetensors");
    let report = fuse_weights(&base.info(), &readers, &config(strategy), &out, &options).unwrap();
    (report, synth::read_all(&out))
}

fn assert_same(a: (FusionReport, Tensors), b: (FusionReport, Tensors), what: &str) {
    let (mut ra, ta) = a;
    let (mut rb, tb) = b;
    for (name, (_, bytes)) in &ta {
        assert!(tb[name].1 == *bytes, "{what}: {name} differs");
    }
    assert_eq!(ta.len(), tb.len(), "{what}");
    (ra.seconds, rb.seconds) = (0.0, 0.0);
    assert_eq!(ra, rb, "{what}: reports differ");
}

#[test]
fn a_running_sum_closes_to_the_engines_bits_in_its_fold_order() {
    for (dtype, encoding) in [(Dtype::F32, Encoding::F32), (Dtype::Bf16, Encoding::Bf16)] {
        let base = synth::base(dtype, 41);
        let mut cs: Vec<Contribution> = (0..3)
            .map(|i| {
                let diff = synth::random_diff(300 + i, 1e-2 * (i + 1) as f32);
                synth::contribute(&base, &format!("site-{i}"), &diff, encoding, 10)
            })
            .collect();
        // A partial diff: the others' tensors count as zeros for it.
        let mut partial = synth::random_diff(310, 1e-2);
        partial.retain(|name, _| name == BODY[1].0);
        cs.push(synth::contribute(&base, "partial", &partial, encoding, 5));
        // One stale contribution, scaled down as asynchronous mode does.
        let scales = [1.0, 0.5f32.sqrt(), 1.0, 1.0];
        for strategy in ["mean", "task-arithmetic:lambda=0.7"] {
            for order in [[3, 0, 2, 1], [0, 1, 2, 3], [2, 3, 1, 0]] {
                // Any number of the diffs folded as they come, the rest in the closing pass.
                for folded in 0..=order.len() {
                    let what = format!("{dtype} {strategy} {order:?} {folded} folded first");
                    let summed = close(&base, &cs, &scales, &order, folded, strategy);
                    assert_eq!(summed.0.fused_tensors, BODY.len(), "{what}");
                    let want = engine(&base, &cs, &scales, &order, strategy);
                    assert_same(summed, want, &what);
                }
            }
        }
    }
}

/// −0 + +0 is +0: the engine's zero row for a diff without a tensor turns a −0 sum into +0, and a
/// sum folded one diff at a time must do the same, or a −0 base value comes out with the wrong sign.
#[test]
fn signed_zeros_add_like_the_engines_zero_rows() {
    let zeroed = BODY[0].0;
    let base = synth::base_with(Dtype::F32, 42, |name, v| {
        if name == zeroed {
            v.fill(-0.0);
        }
    });
    let negative_zeros: BTreeMap<String, Vec<f32>> = synth::random_diff(1, 1e-2)
        .into_iter()
        .map(|(k, v)| {
            let v = if k == zeroed { vec![-0.0; v.len()] } else { v };
            (k, v)
        })
        .collect();
    let mut other = synth::random_diff(2, 1e-2);
    other.remove(zeroed);
    let cs = vec![
        synth::contribute(&base, "a", &negative_zeros, Encoding::F32, 1),
        synth::contribute(&base, "b", &other, Encoding::F32, 1),
        synth::contribute(&base, "c", &negative_zeros, Encoding::F32, 1),
    ];
    let scales = [1.0; 3];
    for folded in 0..=3 {
        let summed = close(&base, &cs, &scales, &[0, 1, 2], folded, "mean");
        let fused = &summed.1[zeroed].0;
        assert!(
            fused.iter().all(|v| v.to_bits() == 0),
            "-0 + (-0 + 0 + -0)/3 is +0 ({folded} folded first)"
        );
        assert_same(
            summed,
            engine(&base, &cs, &scales, &[0, 1, 2], "mean"),
            &format!("signed zeros, {folded} folded first"),
        );
    }
}

#[test]
fn a_running_sum_refuses_what_it_cannot_close() {
    assert!(foldable(&config("mean")));
    assert!(foldable(&config("task-arithmetic:lambda=0.5")));
    for strategy in [
        "median",
        "weighted",
        "ties:density=0.5",
        "trimmed-mean:trim=0.2",
    ] {
        assert!(!foldable(&config(strategy)), "{strategy}");
    }
    let clipped = FusionConfig {
        clip_norm: Some(1.0),
        ..config("mean")
    };
    assert!(!foldable(&clipped));

    let base = synth::base(Dtype::F32, 43);
    let info = base.info();
    let diff = synth::random_diff(7, 1e-2);
    let cs = [
        synth::contribute(&base, "a", &diff, Encoding::F32, 1),
        synth::contribute(&base, "b", &diff, Encoding::F32, 1),
    ];
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("fused.safetensors");
    let mut sum = RunningSum::create(&work.path().join("sum.f64"), &info).unwrap();
    let options = FuseOptions::default();
    let empty = sum.finish(&[], &info, &config("mean"), &out, &options);
    assert!(
        matches!(empty, Err(FusionError::TooFew { .. })),
        "{empty:?}"
    );
    sum.fold(&reader(&base, &cs[0], 1.0), None).unwrap();
    let twice = sum.fold(&reader(&base, &cs[0], 1.0), None).unwrap_err();
    assert!(
        twice.to_string().contains("already in the running sum"),
        "{twice}"
    );
    let again = [reader(&base, &cs[0], 1.0)];
    let err = sum.finish(&again, &info, &config("mean"), &out, &options);
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("already in the running sum"),
        "a diff cannot be in the sum and in the closing pass"
    );
    for bad in [config("median"), clipped] {
        let err = sum.finish(&[], &info, &bad, &out, &options).unwrap_err();
        assert!(matches!(err, FusionError::Config(_)), "{err}");
    }
    assert!(!out.exists(), "nothing is written for a refused close");

    // A diff that breaks mid-fold (its file cut short after it was opened) names its contributor,
    // and leaves the sum unusable rather than half-added.
    let broken = reader(&base, &cs[1], 1.0);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(cs[1].diff_path())
        .unwrap();
    file.set_len(cs[1].manifest.diff_bytes / 2).unwrap();
    match sum.fold(&broken, None) {
        Err(FusionError::Diff { contributor, .. }) => assert_eq!(contributor, "b"),
        other => panic!("a cut diff folded: {other:?}"),
    }
    let after = sum
        .finish(&[], &info, &config("mean"), &out, &options)
        .unwrap_err();
    assert!(after.to_string().contains("incomplete"), "{after}");
    let path = work.path().join("sum.f64");
    assert!(path.exists());
    drop(sum);
    assert!(!path.exists(), "the sum's file goes with it");
}

/// f64 sums of f32 values depend on their order once the values span more than f64's precision:
/// 1 + 2⁻⁶⁰ − 1 is 0, 1 − 1 + 2⁻⁶⁰ is not. The sum closes to the engine's bits in its own fold
/// order, which the canonical order would not reproduce: that is why lineage records it.
#[test]
fn the_fold_order_decides_the_bits_and_is_honoured() {
    let base = synth::base_with(Dtype::F32, 44, |_, v| v.fill(0.0));
    let constant = |x: f32| -> BTreeMap<String, Vec<f32>> {
        BODY.iter()
            .map(|&(name, shape)| (name.to_string(), vec![x; shape.iter().product()]))
            .collect()
    };
    let cs = vec![
        synth::contribute(&base, "up", &constant(1.0), Encoding::F32, 1),
        synth::contribute(&base, "tiny", &constant(2f32.powi(-60)), Encoding::F32, 1),
        synth::contribute(&base, "down", &constant(-1.0), Encoding::F32, 1),
    ];
    let scales = [1.0; 3];
    let lost = close(&base, &cs, &scales, &[0, 1, 2], 3, "mean");
    let kept = close(&base, &cs, &scales, &[0, 2, 1], 1, "mean");
    let name = BODY[0].0;
    assert!(lost.1[name].0.iter().all(|&v| v == 0.0));
    assert!(kept.1[name].0.iter().all(|&v| v == 2f32.powi(-60) / 3.0));
    assert_same(
        lost,
        engine(&base, &cs, &scales, &[0, 1, 2], "mean"),
        "up tiny down",
    );
    assert_same(
        kept,
        engine(&base, &cs, &scales, &[0, 2, 1], "mean"),
        "up down tiny",
    );
}
