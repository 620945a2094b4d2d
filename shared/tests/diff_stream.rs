//! The stream check an upload runs: fed in any pieces, saved and restored between them, it finds
//! what `validate` finds, and measures the same norm as the fusion's scan for dense diffs.

mod common;

use coldfuse_shared::{
    diff::{validate, DiffError, Encoding, StreamCheck, StreamState},
    tensorfile::Dtype,
};
use common::synth;

/// Feeds `bytes` in pieces of the given sizes (cycled), saving and restoring through JSON after
/// each piece.
fn stream(
    bytes: &[u8],
    pieces: &[usize],
    manifest: &coldfuse_shared::diff::DiffManifest,
    info: &coldfuse_shared::diff::BaseInfo,
) -> Result<coldfuse_shared::diff::DiffStats, DiffError> {
    let mut check = StreamCheck::new(manifest.clone(), info)?;
    let mut at = 0;
    for &n in pieces.iter().cycle() {
        if at >= bytes.len() {
            break;
        }
        let end = (at + n).min(bytes.len());
        check.feed(&bytes[at..end])?;
        at = end;
        let saved: StreamState =
            serde_json::from_str(&serde_json::to_string(&check.save()).unwrap()).unwrap();
        check = StreamCheck::restore(manifest.clone(), info, &saved)?;
        assert_eq!(check.offset(), at as u64);
    }
    check.finish()
}

#[test]
fn stream_check_in_any_pieces_matches_validate_and_the_scan() {
    let base = synth::base(Dtype::F32, 1);
    let info = base.info();
    let diff = synth::random_diff(3, 1e-3);
    for encoding in [
        Encoding::F32,
        Encoding::Bf16,
        Encoding::F16,
        Encoding::Int8,
        Encoding::TopK { density: 0.25 },
    ] {
        let c = synth::contribute(&base, "a", &diff, encoding, 10);
        let bytes = std::fs::read(c.diff_path()).unwrap();
        let (reader, want) = validate(&c.diff_path(), c.manifest.clone(), &info).unwrap();
        for pieces in [vec![bytes.len()], vec![1, 3, 7], vec![5, 64, 1000, 2]] {
            let got = stream(&bytes, &pieces, &c.manifest, &info).unwrap();
            assert_eq!(got, want, "{encoding} in pieces {pieces:?}");
        }
        if !matches!(encoding, Encoding::TopK { .. }) {
            assert_eq!(
                reader.scan().unwrap(),
                want,
                "{encoding}: scan and stream agree"
            );
        }
    }
}

#[test]
fn stream_check_refuses_bad_values_short_and_long_files() {
    let base = synth::base(Dtype::F32, 1);
    let info = base.info();
    let c = synth::contribute(&base, "a", &synth::random_diff(4, 1e-3), Encoding::F32, 10);
    let bytes = std::fs::read(c.diff_path()).unwrap();
    let n = bytes.len();

    // A NaN in the last value is found by the piece that carries it, even split across pieces.
    let mut nan = bytes.clone();
    nan[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = stream(&nan, &[n - 2, 2], &c.manifest, &info).unwrap_err();
    assert!(matches!(e, DiffError::NonFinite { .. }), "{e}");

    // Short: the check does not finish.
    let e = stream(&bytes[..n - 1], &[4096], &c.manifest, &info).unwrap_err();
    assert!(
        matches!(e, DiffError::Integrity { what: "size", .. }),
        "{e}"
    );

    // Long: the byte past the announced size is refused.
    let mut long = bytes.clone();
    long.push(0);
    let e = stream(&long, &[4096], &c.manifest, &info).unwrap_err();
    assert!(
        matches!(e, DiffError::Integrity { what: "size", .. }),
        "{e}"
    );

    // A header length beyond what the manifest's tensors can need is refused from its 8 bytes.
    let mut bomb = bytes;
    bomb[..8].copy_from_slice(&(50u64 << 20).to_le_bytes());
    let mut check = StreamCheck::new(c.manifest, &info).unwrap();
    let e = check.feed(&bomb[..8]).unwrap_err();
    assert!(e.to_string().contains("header"), "{e}");
}
