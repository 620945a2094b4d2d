#!/usr/bin/env bash
# Developer-side: a venv with PyTorch + transformers for golden fixtures and baselines (never used in CI).
# Prints the venv's python path. torch from PyPI is a ~5.6 GB CUDA build that also runs on CPU.
set -euo pipefail
venv="${COLDFUSE_PYREF:-$HOME/.cache/coldfuse/pyref}"
if ! "$venv/bin/python" -c 'import torch, transformers, safetensors, sentencepiece, google.protobuf' 2>/dev/null; then
  python3 -m venv "$venv"
  # sentencepiece + protobuf: the DeBERTa fixtures convert an spm.model to tokenizer.json.
  "$venv/bin/pip" install -q torch transformers==5.23.0 safetensors numpy sentencepiece protobuf >&2
fi
echo "$venv/bin/python"
