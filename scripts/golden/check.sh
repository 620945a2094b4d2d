#!/usr/bin/env bash
# Developer-side checks that need PyTorch + transformers (never in CI): our saved model dirs load in
# transformers' AutoModel and reproduce the golden outputs.
set -euo pipefail
cd "$(dirname "$0")/../.."
export COLDFUSE_PYREF_PYTHON="$(scripts/golden/setup.sh)"
cargo test -p coldfuse-shared --test checkpoint -- --ignored --nocapture transformers
cargo test -p coldfuse-shared --test deberta -- --ignored --nocapture transformers
# A base fused by coordinator + contributor processes loads in transformers with the same outputs.
eval "$(scripts/assets.sh)"
cargo test -p coldfuse-e2e --test e2e_contributors -- --ignored --nocapture transformers
