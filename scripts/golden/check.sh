#!/usr/bin/env bash
# Developer-side checks that need PyTorch + transformers (never in CI): our saved model dirs load in
# transformers' AutoModel and reproduce the golden outputs.
set -euo pipefail
cd "$(dirname "$0")/../.."
export COLDFUSE_PYREF_PYTHON="$(scripts/golden/setup.sh)"
cargo test -p coldfuse-shared --test checkpoint -- --ignored --nocapture transformers
cargo test -p coldfuse-shared --test deberta -- --ignored --nocapture transformers
