#!/usr/bin/env bash
# The GPU proof, in one command on a machine with an NVIDIA GPU and its driver (r580 or later) and
# nothing else: the CUDA compiler and libraries, the test assets and PyTorch are installed into the
# cache by the scripts it calls. Idempotent; a second run reinstalls nothing.
#   1. The golden checks on `cuda` (the `*cuda*` tests of coldfuse-shared, under COLDFUSE_REQUIRE_GPU=1 so
#      that a missing GPU fails them): every forward and gradient fixture against transformers, a training
#      pass with dropout against the CPU's (same masks from the same seeds), the 3-step AdamW run against
#      PyTorch in f32 and bf16, and a MiniLM fine-tune on SMS spam that must beat the majority class, in
#      f32 and bf16.
#   2. `coldfuse bench train --device cuda` against PyTorch CUDA (same shapes, alternating rounds) for
#      all-MiniLM-L6-v2 and a roberta-base-sized model with random weights, batch 32 × 128, f32 and bf16.
#      Each run's JSON line is printed, then one JSON array of them (also written to gpu-check.json).
# Usage: scripts/gpu-check.sh [--no-bench]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/coldfuse/target}"
command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: this needs an NVIDIA GPU and its driver" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
# Compile the kernels for this GPU (e.g. "9.0" -> 90) unless told otherwise.
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d ' .')
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-$cap}"
# Assigned first: `eval "$(cmd)"` would go on after a failed install.
toolchain=$(scripts/cuda-toolchain.sh --link)
eval "$toolchain"
assets=$(scripts/assets.sh)
eval "$assets"

echo "== golden checks on cuda"
log=$(mktemp)
COLDFUSE_REQUIRE_GPU=1 cargo test --release --locked -p coldfuse-shared --features cuda \
  --test golden --test train_golden --test train_minilm -- cuda --nocapture 2>&1 | tee "$log"
# The name filter must have found every GPU check: a renamed test would otherwise pass unseen.
for t in golden_fixtures_on_cuda dropout_masks_on_cuda_equal_the_cpu_masks \
  dropout_training_pass_on_cuda_equals_the_cpu three_adamw_steps_on_cuda_match_pytorch_in_f32_and_bf16 \
  minilm_learns_sms_spam_on_cuda_in_f32_and_bf16; do
  grep -q "^test $t \.\.\. ok" "$log" || { echo "GPU check $t did not run and pass" >&2; exit 1; }
done
rm -f "$log"
[ "${1:-}" = "--no-bench" ] && exit 0

echo "== bench train on cuda"
python=$(scripts/golden/setup.sh)
cargo build --release --locked -p coldfuse --features cuda
bin="$CARGO_TARGET_DIR/release/coldfuse"
# roberta-base's shape (125M parameters) with random weights: the model hub is not needed.
base="${COLDFUSE_CACHE:-$HOME/.cache/coldfuse}/roberta-base-random"
if [ ! -f "$base/model.safetensors" ]; then
  "$python" - "$base" <<'PY'
import sys
from transformers import RobertaConfig, RobertaModel
cfg = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)
RobertaModel(cfg).save_pretrained(sys.argv[1])
PY
fi
results=()
for model in "$COLDFUSE_MINILM_DIR" "$base"; do
  for precision in f32 bf16; do
    line=$("$bin" bench train --model "$model" --device cuda --precision "$precision" \
      --batch 32 --seq 128 --steps 10 --rounds 3 | tee /dev/stderr | tail -n 1)
    results+=("$line")
  done
done
json="[$(IFS=,; echo "${results[*]}")]"
echo "$json" | tee gpu-check.json
